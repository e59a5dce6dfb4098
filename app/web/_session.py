"""Browser sessions for the dashboard and the member page: signed cookies, and the CSRF tokens tied to them.

A session is stateless: ``<who>.<expires>.<signature>``, signed with the database's secret, so every
replica accepts a session any other made, and nothing is stored per session. Each request checks that
the admin (or key) behind it is still live in the cache, so revoking one ends its sessions within the
sync interval. A member's session also signs a fingerprint of the key's secret: rotating the key ends
it. Cookies are HttpOnly and SameSite=Strict, and Secure over HTTPS (or when the operator says so).

Every form that changes something carries a CSRF token derived from the session it was rendered for;
the sign-in forms, which have no session yet, use a random token in a cookie of its own (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from litestar import Response

__all__ = ["ADMIN_COOKIE", "MEMBER_COOKIE", "SIGNIN_COOKIE", "Sessions"]

ADMIN_COOKIE = "poolgate_admin"
MEMBER_COOKIE = "poolgate_member"
SIGNIN_COOKIE = "poolgate_signin"
SESSION_SECONDS = 12 * 3600


class Sessions:
    def __init__(self, secret: bytes, *, secure: bool = False) -> None:
        self._key = hashlib.sha256(b"poolgate sessions\0" + secret).digest()
        self.always_secure = secure

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:40]

    def make(self, subject: str, fingerprint: str = "", *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{subject}.{expires}"
        return f"{body}.{self._sign(body + '.' + fingerprint)}"

    def read(self, value: str | None, fingerprint: str = "", *, now: float | None = None) -> str | None:
        """The subject of a valid, unexpired session; None for anything else."""
        if not value or value.count(".") != 2:
            return None
        subject, expires, signature = value.split(".")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return None
        if not hmac.compare_digest(signature, self._sign(f"{subject}.{expires}.{fingerprint}")):
            return None
        return subject

    def subject_of(self, value: str | None) -> str | None:
        """The subject a session names, before its signature is checked (to find its fingerprint)."""
        return value.split(".", 1)[0] if value and value.count(".") == 2 else None

    def csrf(self, session: str) -> str:
        return self._sign("csrf." + session)

    def csrf_ok(self, session: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(session), str(given))

    @staticmethod
    def signin_token() -> str:
        return secrets.token_urlsafe(24)

    def set_cookie(self, response: Response[bytes], name: str, value: str, path: str, scheme: str,
                   max_age: int = SESSION_SECONDS) -> None:
        response.set_cookie(name, value, path=path, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.always_secure or scheme == "https")

    def clear_cookie(self, response: Response[bytes], name: str, path: str, scheme: str) -> None:
        self.set_cookie(response, name, "", path, scheme, max_age=0)


def fingerprint(digest: bytes | str) -> str:
    """A short, non-secret tag of a stored secret digest (a rotation changes it)."""
    raw = digest.encode() if isinstance(digest, str) else digest
    return hashlib.sha256(raw).hexdigest()[:16]


def form_value(form: Mapping[str, object], name: str) -> str:
    value = form.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").strip()
