"""Callers' and operators' tokens (docs/security-gateway.md): what a token stands for, what
`itinerant up` generates for a local mesh and keeps, what it prints, and what the CLI sends."""

from __future__ import annotations

import json
import stat

import pytest
from pydantic import SecretStr

from itinerant.security.local import prepare_tokens
from itinerant.security.tokens import (
    TOKENS_FILE,
    TokenConfigError,
    TokenTable,
    operator_headers,
    usage_lines,
)
from itinerant.settings import Settings

LONG = "x" * 16


def test_a_token_stands_for_its_principal() -> None:
    table = TokenTable(
        [("alice", SecretStr("alice-" + LONG)), ("operator", SecretStr("op-" + LONG))],
        operators=["operator"],
    )
    alice = table.identify("alice-" + LONG)
    assert alice is not None and alice.name == "alice" and not alice.operator
    operator = table.identify_header("Bearer op-" + LONG)
    assert operator is not None and operator.operator
    for wrong in ("alice-" + LONG[:-1], "", "op-" + LONG + "x"):
        assert table.identify(wrong) is None
    assert table.identify_header("Basic op-" + LONG) is None
    assert table.identify_header("Bearer ") is None
    assert not TokenTable([], ["operator"])


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        ([("alice", "short")], "shorter than 16"),
        ([("Alice Smith", LONG)], "not a valid name"),
        ([("a", LONG), ("b", LONG)], "same token"),
    ],
)
def test_bad_tokens_are_refused_with_what_to_do(pairs: list[tuple[str, str]], words: str) -> None:
    with pytest.raises(TokenConfigError) as raised:
        TokenTable([(n, SecretStr(t)) for n, t in pairs], [])
    assert words in str(raised.value)
    assert not raised.value.retryable


def test_up_generates_tokens_once_into_a_private_file(settings: Settings) -> None:
    prepared = prepare_tokens(settings)
    path = settings.data_dir / TOKENS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    user = prepared.gateway_tokens["user"].get_secret_value()
    operator = prepared.operator_tokens["operator"].get_secret_value()
    assert stored == {"gateway_tokens": {"user": user}, "operator_tokens": {"operator": operator}}
    assert len(user) >= 32 and user != operator
    again = prepare_tokens(settings)  # the next `itinerant up`: the same tokens
    assert again.gateway_tokens == prepared.gateway_tokens
    assert again.operator_tokens == prepared.operator_tokens
    # the services up starts get the real tokens
    assert json.loads(prepared.to_env()["ITINERANT_GATEWAY_TOKENS"]) == {"user": user}


def test_configured_tokens_are_kept_and_nothing_is_generated_for_them(
    settings: Settings,
) -> None:
    configured = settings.model_copy(
        update={
            "gateway_tokens": {"alice": SecretStr("alice-" + LONG)},
            "operator_tokens": {"operator": SecretStr("op-" + LONG)},
        }
    )
    assert prepare_tokens(configured) is configured
    assert not (settings.data_dir / TOKENS_FILE).exists()
    single = settings.model_copy(update={"gateway_token": SecretStr("default-" + LONG)})
    prepared = prepare_tokens(single)
    assert prepared.gateway_tokens == {}  # ITINERANT_GATEWAY_TOKEN is the caller `default`
    assert json.loads((settings.data_dir / TOKENS_FILE).read_text())["gateway_tokens"] == {}


def test_the_cli_sends_the_operators_token(settings: Settings) -> None:
    assert operator_headers(settings) == {}
    prepared = prepare_tokens(settings)
    token = prepared.operator_tokens["operator"].get_secret_value()
    assert operator_headers(prepared) == {"Authorization": f"Bearer {token}"}
    fresh = Settings(data_dir=settings.data_dir)  # another process: reads tokens.json
    assert operator_headers(fresh) == {"Authorization": f"Bearer {token}"}


def test_up_prints_where_the_token_is_and_the_secret_only_on_a_terminal(
    settings: Settings,
) -> None:
    prepared = prepare_tokens(settings)
    user = prepared.gateway_tokens["user"].get_secret_value()
    operator = prepared.operator_tokens["operator"].get_secret_value()
    quiet = "\n".join(usage_lines(prepared, show_secret=False))
    path = str(settings.data_dir / TOKENS_FILE)
    assert path in quiet and "curl" in quiet and "Authorization: Bearer" in quiet
    assert user not in quiet and operator not in quiet
    shown = "\n".join(usage_lines(prepared, show_secret=True))
    assert user in shown and operator not in shown
