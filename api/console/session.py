"""The console's session: a signed cookie, checked against the database on every page.

The cookie holds who signed in (the SHA-256 of the key they presented, never the key), a
nonce that CSRF tokens derive from, the waitlist application an applicant is following, and
a one-shot notice. It is signed (itsdangerous, HMAC-SHA1 over a server secret) and dated:
a cookie older than the idle timeout is refused, and every page re-signs it, so the timeout
counts from the last page seen. A session also ends `MAX_SESSION_S` after sign-in, however
active. Whether the key may still be used is decided by the database on each page
(`api.console.deps`), so revoking a key or suspending an account ends its sessions.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

Role = Literal["visitor", "developer", "admin"]
NoticeKind = Literal["info", "success", "error"]
COOKIE_NAME = "sg_console"
COOKIE_PATH = "/console"
MAX_SESSION_S = 12 * 3600
SALT = "sluicegate.console.session"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    nonce: str
    role: Role = "visitor"
    credential: str | None = None  # SHA-256 of the signed-in key (developer or admin)
    label: str | None = None  # what the header shows: a key prefix or an admin key's name
    account_id: str | None = None
    signed_in_at: int = 0
    # The waitlist application this browser applied with: (id, claim token).
    application: tuple[str, str] | None = None
    notice: str | None = None
    notice_kind: NoticeKind = "info"

    @classmethod
    def fresh(cls, *, application: tuple[str, str] | None = None) -> ConsoleSession:
        return cls(nonce=secrets.token_hex(16), application=application)

    def signed_in(
        self, role: Role, *, credential: str, label: str, account_id: str | None = None
    ) -> ConsoleSession:
        """A new nonce on sign-in, so a token planted before it is worth nothing after."""
        return replace(
            ConsoleSession.fresh(application=self.application),
            role=role,
            credential=credential,
            label=label,
            account_id=account_id,
            signed_in_at=int(time.time()),
        )

    def signed_out(self) -> ConsoleSession:
        return ConsoleSession.fresh(application=self.application)

    def with_notice(self, text: str, kind: NoticeKind = "info") -> ConsoleSession:
        return replace(self, notice=text, notice_kind=kind)

    def without_notice(self) -> ConsoleSession:
        return replace(self, notice=None, notice_kind="info")

    def with_application(self, application_id: str, claim_token: str) -> ConsoleSession:
        return replace(self, application=(application_id, claim_token))

    def without_application(self) -> ConsoleSession:
        return replace(self, application=None)

    @property
    def too_old(self) -> bool:
        return self.role != "visitor" and time.time() - self.signed_in_at > MAX_SESSION_S


class SessionCodec:
    """Cookie text <-> `ConsoleSession`, refusing forged, garbled or idle-expired cookies."""

    def __init__(self, secret: str, *, idle_timeout_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.idle_timeout_s = idle_timeout_s

    def dumps(self, session: ConsoleSession) -> str:
        return self._serializer.dumps(asdict(session))

    def loads(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie:
            return None
        try:
            data: Any = self._serializer.loads(cookie, max_age=self.idle_timeout_s)
            application = data.pop("application", None)
            session = ConsoleSession(
                **data, application=tuple(application) if application else None
            )
        except (BadSignature, TypeError, ValueError, AttributeError):
            return None
        return None if session.too_old else session
