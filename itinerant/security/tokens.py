"""Callers' bearer tokens and the principals they stand for (docs/security-gateway.md).

A token is a principal. The A2A gateway accepts the callers' tokens (``ITINERANT_GATEWAY_TOKENS``,
``ITINERANT_GATEWAY_TOKEN`` as principal ``default``) and the operators' (``ITINERANT_OPERATOR_
TOKENS``); the coordinator's saga view accepts only an operator's. Principals named in
``ITINERANT_OPERATORS`` are operators. When the settings configure no token of a kind, the
tokens `itinerant up` generated in ``<data_dir>/tokens.json`` (0600) are used, so a local mesh
and its CLI agree without any configuration.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from itinerant.errors import NonRetryableError
from itinerant.security.keys import PRINCIPAL
from itinerant.settings import Settings

TOKENS_FILE = "tokens.json"
#: The principal of ``ITINERANT_GATEWAY_TOKEN``.
DEFAULT_PRINCIPAL = "default"
#: The caller `itinerant up` generates a token for when none is configured.
LOCAL_CALLER = "user"
CALLERS_KEY = "gateway_tokens"
OPERATORS_KEY = "operator_tokens"
MIN_TOKEN_CHARS = 16
#: What to do when the saga view refuses the CLI's token.
TOKEN_HINT = (
    "the CLI sends ITINERANT_OPERATOR's token from ITINERANT_OPERATOR_TOKENS, else from "
    "<data dir>/tokens.json (written by `itinerant up`); run with the mesh's settings"
)


class TokenConfigError(NonRetryableError):
    """The tokens are configured wrongly: a configuration error, refused at start."""

    reason = "token_config"
    hint = (
        "set ITINERANT_GATEWAY_TOKENS / ITINERANT_OPERATOR_TOKENS as JSON "
        '{"principal": "<token>"} (docs/security-gateway.md)'
    )


@dataclass(frozen=True)
class Principal:
    """Who a token stands for; an operator sees and acts on every task."""

    name: str
    operator: bool = False


class TokenTable:
    """Tokens -> principals, compared in constant time."""

    def __init__(self, tokens: Iterable[tuple[str, SecretStr]], operators: Collection[str]) -> None:
        pairs = {(name, token.get_secret_value().encode()) for name, token in tokens}
        self._tokens = sorted(pairs)
        self._operators = frozenset(operators)
        for name, raw in self._tokens:
            if not PRINCIPAL.match(name):
                raise TokenConfigError(
                    f"principal {name!r} is not a valid name (lowercase letters, digits, '_', "
                    "'.', '-'; at most 64)"
                )
            if len(raw) < MIN_TOKEN_CHARS:
                raise TokenConfigError(
                    f"the token of principal {name!r} is shorter than {MIN_TOKEN_CHARS} "
                    "characters; use a long random one (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
        values = [raw for _name, raw in self._tokens]
        if len(set(values)) != len(values):
            raise TokenConfigError("two principals have the same token; give each its own")

    def __bool__(self) -> bool:
        return bool(self._tokens)

    @property
    def principals(self) -> list[str]:
        return [name for name, _raw in self._tokens]

    def identify(self, presented: str) -> Principal | None:
        """The principal whose token is ``presented`` (every token compared, constant-time)."""
        given = presented.encode()
        found: str | None = None
        for name, raw in self._tokens:
            if hmac.compare_digest(given, raw) and found is None:
                found = name
        if found is None:
            return None
        return Principal(found, operator=found in self._operators)

    def identify_header(self, authorization: str) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header value."""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        return self.identify(given.strip())


# -- where tokens come from ----------------------------------------------------------------------


def tokens_path(settings: Settings) -> Path:
    return settings.tokens_file or settings.data_dir / TOKENS_FILE


def read_file(path: Path) -> dict[str, dict[str, SecretStr]]:
    """``tokens.json``: {"gateway_tokens": {...}, "operator_tokens": {...}}; empty if absent."""
    if not path.exists():
        return {CALLERS_KEY: {}, OPERATORS_KEY: {}}
    try:
        raw: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokenConfigError(
            f"{path} is not readable JSON ({exc}); delete it and run `itinerant up` again"
        ) from exc
    out: dict[str, dict[str, SecretStr]] = {}
    for key in (CALLERS_KEY, OPERATORS_KEY):
        group = raw.get(key, {}) if isinstance(raw, dict) else None
        if not isinstance(group, dict) or not all(isinstance(v, str) for v in group.values()):
            raise TokenConfigError(f"{path}: {key} must map principals to token strings")
        out[key] = {str(name): SecretStr(value) for name, value in group.items()}
    return out


def write_file(path: Path, groups: Mapping[str, Mapping[str, SecretStr]]) -> None:
    """Write ``tokens.json`` readable by its owner only (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        key: {n: t.get_secret_value() for n, t in group.items()} for key, group in groups.items()
    }
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out, indent=2)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


def configured_callers(settings: Settings) -> dict[str, SecretStr]:
    """The callers the settings name: ITINERANT_GATEWAY_TOKENS, plus ITINERANT_GATEWAY_TOKEN as
    principal ``default``."""
    found = dict(settings.gateway_tokens)
    if settings.gateway_token is not None and settings.gateway_token.get_secret_value():
        found.setdefault(DEFAULT_PRINCIPAL, settings.gateway_token)
    return found


def callers(settings: Settings) -> dict[str, SecretStr]:
    """The gateway's callers: the configured ones, else those of ``tokens.json``."""
    return configured_callers(settings) or read_file(tokens_path(settings))[CALLERS_KEY]


def operators(settings: Settings) -> dict[str, SecretStr]:
    """The operators' tokens: the configured ones, else those of ``tokens.json``."""
    return dict(settings.operator_tokens) or read_file(tokens_path(settings))[OPERATORS_KEY]


def gateway_table(settings: Settings) -> TokenTable:
    """Every token the gateway takes: its callers' and the operators'."""
    pairs = [*operators(settings).items(), *callers(settings).items()]
    return TokenTable(pairs, settings.operators)


def view_table(settings: Settings) -> TokenTable:
    """Every token the coordinator's view knows (a caller's is refused there with 403)."""
    return gateway_table(settings)


def operator_token(settings: Settings) -> SecretStr | None:
    """The token the CLI (and the gateway, reading the saga view) sends: ITINERANT_OPERATOR's,
    else the only operator token there is."""
    found = operators(settings)
    if settings.operator in found:
        return found[settings.operator]
    return next(iter(found.values())) if len(found) == 1 else None


def operator_headers(settings: Settings) -> dict[str, str]:
    """``Authorization`` for the coordinator's saga view (empty when no operator token)."""
    token = operator_token(settings)
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- a local mesh ----------------------------------------------------------------------------------


def ensure_local_tokens(settings: Settings) -> Settings:
    """``settings`` with tokens for a local mesh: a kind the settings configure stays as it is;
    otherwise the tokens of ``tokens.json`` are used, generated (a caller ``user``, an operator
    ``ITINERANT_OPERATOR``) when the file lacks them, and kept across restarts."""
    path = tokens_path(settings)
    stored = read_file(path)
    changed = False
    if not configured_callers(settings) and not stored[CALLERS_KEY]:
        stored[CALLERS_KEY] = {LOCAL_CALLER: SecretStr(secrets.token_urlsafe(32))}
        changed = True
    if not settings.operator_tokens and not stored[OPERATORS_KEY]:
        stored[OPERATORS_KEY] = {settings.operator: SecretStr(secrets.token_urlsafe(32))}
        changed = True
    if changed:
        write_file(path, stored)
    elif path.exists() and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    update: dict[str, Any] = {}
    if not configured_callers(settings):
        update["gateway_tokens"] = stored[CALLERS_KEY]
    if not settings.operator_tokens:
        update["operator_tokens"] = stored[OPERATORS_KEY]
    return settings.model_copy(update=update) if update else settings


def usage_lines(settings: Settings, show_secret: bool) -> list[str]:
    """What `itinerant up` prints about the tokens: where they are and a line to use one. The
    token itself only when ``show_secret`` (a terminal, never a log file)."""
    path = tokens_path(settings)
    lines: list[str] = []
    found = callers(settings)
    if settings.gateway_port and found:
        name = LOCAL_CALLER if LOCAL_CALLER in found else next(iter(found))
        generated = name in read_file(path)[CALLERS_KEY]
        where = f"{path} ({CALLERS_KEY}.{name}, 0600)" if generated else "your settings"
        lines.append(f"  A2A caller  principal {name!r}, token in {where}")
        if show_secret:
            lines.append(f"              token {found[name].get_secret_value()}")
        read = (
            f'$(python3 -c \'import json; print(json.load(open("{path}"))'
            f'["{CALLERS_KEY}"]["{name}"])\')'
            if generated
            else "<token>"
        )
        host = (
            "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::", "") else settings.gateway_host
        )
        lines.append(
            f'              curl -H "Authorization: Bearer {read}" '
            f"-H 'content-type: application/json' http://{host}:{settings.gateway_port}/ "
            '-d \'{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"<task id>"}}\''
        )
    op = operator_token(settings)
    if op is not None:
        generated = settings.operator in read_file(path)[OPERATORS_KEY]
        where = f"{path} ({OPERATORS_KEY}.{settings.operator})" if generated else "your settings"
        lines.append(
            f"  operator    principal {settings.operator!r}, token in {where}; the CLI sends it "
            "to the saga view (Authorization: Bearer)"
        )
    return lines
