"""Console logins (docs/console.md#logging-in).

An operator logs in with an operator token (ITINERANT_OPERATOR_TOKENS, or the one `itinerant up`
generated). The console checks it against the same token table as the coordinator's saga view
and keeps, in memory only, a random session id -> (principal, token, expiry). The browser holds
the session id in a cookie that is ``HttpOnly`` (no script on the page can read it, so an
injected script cannot steal the login) and ``SameSite=Strict`` (another site cannot make the
browser send it, so it cannot act for the operator). The token itself never goes back to the
browser and is never logged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from pydantic import SecretStr

from itinerant.security.tokens import Principal, TokenTable

COOKIE = "itinerant_console"


@dataclass(frozen=True)
class Session:
    principal: str
    token: SecretStr
    expires_at: float

    def authorization(self) -> dict[str, str]:
        """The header the coordinator's view wants: this operator's own token."""
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"}


class LoginRefused(Exception):
    """The token is unknown (401) or not an operator's (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sessions:
    """Session ids -> logged-in operators, expiring after ``lifetime_s``."""

    def __init__(self, tokens: TokenTable, lifetime_s: float) -> None:
        self._tokens = tokens
        self._lifetime_s = lifetime_s
        self._open: dict[str, Session] = {}

    def login(self, token: str) -> tuple[str, Session]:
        principal: Principal | None = self._tokens.identify(token.strip()) if token else None
        if principal is None:
            raise LoginRefused(
                401,
                "unknown token: paste an operator's token (ITINERANT_OPERATOR_TOKENS, or "
                "operator_tokens in <data dir>/tokens.json written by `itinerant up`)",
            )
        if not principal.operator:
            raise LoginRefused(
                403,
                f"principal {principal.name!r} is a caller, not an operator "
                "(ITINERANT_OPERATORS); log in with an operator's token",
            )
        self._expire()
        session_id = secrets.token_urlsafe(32)
        session = Session(
            principal.name, SecretStr(token.strip()), time.monotonic() + self._lifetime_s
        )
        self._open[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None or session.expires_at <= time.monotonic():
            self._open.pop(session_id, None)
            return None
        return session

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self._open.pop(session_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._open.items() if s.expires_at <= now]:
            del self._open[key]
