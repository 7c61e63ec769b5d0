"""Secret generation and hashing for API keys, admin keys and waitlist claim tokens.

A raw secret exists only in the response that created it; storage keeps its SHA-256 hex
and a short display prefix. SHA-256 (not a slow KDF) is right here: the secrets carry 256
random bits, so there is nothing to brute-force, and lookup must be one indexed query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

API_KEY_MARKER = "sk-"
ADMIN_KEY_MARKER = "sk-admin-"
CLAIM_TOKEN_MARKER = "wlc-"
SECRET_BYTES = 32
DISPLAY_CHARS = 8  # random characters kept after the marker in the display prefix


def _random_part() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()


def new_api_key() -> str:
    """`sk-` + base64url of 32 random bytes; never shaped like an admin key."""
    while True:
        key = API_KEY_MARKER + _random_part()
        if not key.startswith(ADMIN_KEY_MARKER):
            return key


def new_admin_key() -> str:
    return ADMIN_KEY_MARKER + _random_part()


def new_claim_token() -> str:
    return CLAIM_TOKEN_MARKER + _random_part()


def is_admin_key(raw: str) -> bool:
    return raw.startswith(ADMIN_KEY_MARKER)


def hash_secret(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def secret_matches(raw: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(raw), stored_hash)


def display_prefix(raw: str) -> str:
    """What lists show, e.g. `sk-AbCdEfGh` or `sk-admin-AbCdEfGh`: enough to tell keys apart."""
    marker = ADMIN_KEY_MARKER if is_admin_key(raw) else API_KEY_MARKER
    return raw[: len(marker) + DISPLAY_CHARS]
