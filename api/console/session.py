"""The console's session as one request sees it, and the cookie that names it.

Who is signed in lives on the server (`auth.console_sessions`, one row per signed-in
session, found again on every page by `api.console.session_store`). The cookie carries the
random session id, signed (itsdangerous, HMAC over the console secret), and nothing that
grants access: besides the id, only what this browser keeps before anyone signs in (the
waitlist application it follows, a one-shot notice). Signing out deletes the row, so a
copied cookie is dead at once; idle and absolute timeouts are the server's, from the row.

A visitor's id has no row; it is still what the CSRF tokens derive from (`api.console.csrf`).
Signing in replaces it with a new one, so an id planted before sign-in is worth nothing after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from itsdangerous import BadSignature, URLSafeSerializer

from auth.console_sessions import Holder, is_session_id, new_session_id

Role = Literal["visitor", "developer", "admin"]
NoticeKind = Literal["info", "success", "error"]
COOKIE_NAME = "sg_console"
COOKIE_PATH = "/console"
SALT = "sluicegate.console.session.v2"  # v1 cookies carried the key's hash: refused
# Browsers keep cookies up to 4 KB; anything longer was not made here.
MAX_COOKIE_CHARS = 4096
NOTICE_KINDS: dict[object, NoticeKind] = {kind: kind for kind in get_args(NoticeKind)}


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    sid: str  # the session id: its row's key once signed in; CSRF tokens derive from it
    role: Role = "visitor"
    credential: str | None = None  # SHA-256 of the signed-in key (from the row)
    label: str | None = None  # what the header shows: a key prefix or an admin key's name
    account_id: str | None = None
    # The waitlist application this browser applied with: (id, claim token).
    application: tuple[str, str] | None = None
    notice: str | None = None
    notice_kind: NoticeKind = "info"

    @classmethod
    def fresh(cls, *, application: tuple[str, str] | None = None) -> ConsoleSession:
        return cls(sid=new_session_id(), application=application)

    def held_by(self, holder: Holder) -> ConsoleSession:
        """This session as its row says (who signed in)."""
        return replace(
            self,
            role=holder.role,
            credential=holder.credential_hash,
            label=holder.label,
            account_id=holder.account_id,
        )

    def signed_in(self, sid: str, holder: Holder) -> ConsoleSession:
        """The new session started at sign-in (a new id, so a new CSRF token too)."""
        return replace(self, sid=sid).held_by(holder)

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


class SessionCodec:
    """Cookie text <-> `ConsoleSession` (a visitor until its row is found), refusing forged,
    garbled or oversized cookies."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt=SALT)

    def dumps(self, session: ConsoleSession) -> str:
        return self._serializer.dumps(
            {
                "sid": session.sid,
                "application": session.application,
                "notice": session.notice,
                "notice_kind": session.notice_kind,
            }
        )

    def loads(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        try:
            data: Any = self._serializer.loads(cookie)
        except BadSignature:
            return None
        return _session_from(data)


def _session_from(data: Any) -> ConsoleSession | None:
    """Only the shapes `dumps` writes; a signed cookie of any other shape is ignored."""
    if not isinstance(data, dict):
        return None
    sid, application = data.get("sid"), data.get("application")
    notice, kind_text = data.get("notice"), data.get("notice_kind")
    kind = NOTICE_KINDS.get(kind_text) if isinstance(kind_text, str) else None
    if not isinstance(sid, str) or not is_session_id(sid):
        return None
    if application is not None and not (
        isinstance(application, list)
        and len(application) == 2
        and all(isinstance(part, str) for part in application)
    ):
        return None
    if not (notice is None or isinstance(notice, str)) or kind is None:
        return None
    return ConsoleSession(
        sid=sid,
        application=(application[0], application[1]) if application else None,
        notice=notice,
        notice_kind=kind,
    )
