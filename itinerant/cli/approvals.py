"""``itinerant approvals``: sagas held at the approval gate, and a human's decision on them.

The decision is a control event (``itinerant.saga.approval_decided.v1``) on the saga events
topic, keyed by saga id; the coordinator applies it and records who and why on the timeline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from itinerant.cli.context import cli_settings
from itinerant.errors import ItinerantError
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire.control import DECISION_TYPE, ApprovalDecision
from itinerant.wire.envelope import Envelope, OutMessage
from itinerant.wire.ids import new_id

from .kafka_io import publish_raw
from .render import saga_tables
from .terminal import emit_json, safe

EXIT_CODES = "Exit codes: 0 done; 1 failure (coordinator or Kafka); 3 no such saga or not waiting."

approvals_app = typer.Typer(
    help="Sagas waiting for a human's approval: list, show, approve, reject. " + EXIT_CODES,
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {safe(message, multiline=True)}")
    raise typer.Exit(code)


def _get(settings: Settings, path: str) -> Any:
    url = f"http://127.0.0.1:{settings.coordinator_http_port}{path}"
    from itinerant.security.tokens import TOKEN_HINT, operator_headers

    request = urllib.request.Request(url, headers=operator_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            _fail(f"no saga at {path} (not yet started, or a typo)", 3)
        if exc.code in (401, 403):
            _fail(f"the saga view refused the operator token ({exc.code}); {TOKEN_HINT}")
        _fail(f"coordinator answered {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"the coordinator's saga view at {url} does not answer ({exc}); is it running?")


def _waiting(settings: Settings, saga_id: str) -> dict[str, Any]:
    saga: dict[str, Any] = _get(settings, f"/sagas/{saga_id}")
    if saga["state"] != "awaiting_approval":
        _fail(f"saga {saga_id} is {saga['state']}, not awaiting approval", 3)
    return saga


@approvals_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Sagas awaiting approval, oldest request first, with why and until when."""
    settings = cli_settings()
    sagas = _get(settings, "/sagas?state=awaiting_approval&limit=1000")["sagas"]
    sagas.sort(key=lambda s: (s.get("approval") or {}).get("requested_at", ""))
    if as_json:
        emit_json([summary(s) for s in sagas])
        return
    table = Table(title=f"{len(sagas)} saga(s) awaiting approval")
    for column in ("saga", "amount", "why", "since", "deadline"):
        table.add_column(column)
    for saga in sagas:
        row = summary(saga)
        table.add_row(
            safe(row["saga_id"]),
            f"${row['amount_usd']:.2f}" if row["amount_usd"] is not None else "",
            safe("; ".join(str(r) for r in row["reasons"])),
            safe(str(row["requested_at"])[:19]),
            safe(str(row["deadline"])[:19]),
        )
    console.print(table)


def summary(saga: dict[str, Any]) -> dict[str, Any]:
    hold = saga.get("approval") or {}
    return {
        "saga_id": saga["saga_id"],
        "amount_usd": hold.get("amount_usd"),
        "reasons": hold.get("reasons", []),
        "requested_at": hold.get("requested_at"),
        "deadline": hold.get("deadline"),
        "next_step": _next_step(hold),
    }


def _next_step(hold: dict[str, Any]) -> str | None:
    slip = hold.get("slip") or {}
    steps = slip.get("steps") or []
    after = int(slip.get("next", 0)) + 1
    if after >= len(steps):
        return None
    step = steps[after]
    if "parallel" in step:
        return "parallel group"
    return f"{step['agent']}.{step.get('action', 'run')}"


@approvals_app.command("show")
def show(saga_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is waiting: the reasons, the amount, the step it would release, the payload so far."""
    settings = cli_settings()
    saga = _get(settings, f"/sagas/{saga_id}")
    if as_json:
        emit_json({**summary(saga), "state": saga["state"]})
        return
    held = summary(saga)
    head = Table(title=f"approval of saga {safe(saga_id)}", show_header=False)
    head.add_row("state", safe(saga["state"]))
    if held["amount_usd"] is not None:
        head.add_row("amount", f"${held['amount_usd']:.2f}")
    for reason in held["reasons"]:
        head.add_row("why", safe(reason))
    head.add_row("releases", safe(held["next_step"] or "(end)"))
    head.add_row("deadline", safe(held["deadline"]))
    console.print(head)
    for table in saga_tables(saga)[1:]:
        console.print(table)


def signed_decision(
    settings: Settings, saga_id: str, decision: str, why: str, principal: str
) -> OutMessage:
    """The decision event on ``saga_id``, signed as ``principal`` (the CLI's and the console's):
    the coordinator believes the signature, and the verified signer is who decided on the
    timeline (docs/security.md#approvals). Raises ItinerantError when it cannot sign."""
    body = ApprovalDecision(
        saga_id=saga_id,
        decision="approve" if decision == "approve" else "reject",
        by=principal,
        why=why,
    )
    message = Envelope(
        id=new_id(),
        type=f"{DECISION_TYPE}.v1",
        source=f"/clients/{principal}",
        saga_id=saga_id,
        data=body.model_dump_json().encode(),
    ).to_message(settings.events_topic)
    return mesh_keys(settings).sign(message, principal)


def _decide(saga_id: str, decision: str, why: str, principal: str | None) -> None:
    """Publish the decision signed as the approver."""
    settings = cli_settings()
    principal = principal or settings.operator
    _waiting(settings, saga_id)
    try:
        message = signed_decision(settings, saga_id, decision, why, principal)
        publish_raw(settings, message.topic, message.key, message.value, message.headers)
    except ItinerantError as exc:
        _fail(exc.describe())
    verb = "approved" if decision == "approve" else "rejected"
    console.print(f"[green]{verb}[/green] {safe(saga_id)} as {safe(principal)}: {safe(why)}")


Why = Annotated[str, typer.Option("--why", help="why (recorded on the saga's timeline)")]
By = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="the approver principal to sign as (default: ITINERANT_OPERATOR); its key must be "
        "in the keys folder and it must be in ITINERANT_APPROVERS",
    ),
]


@approvals_app.command("approve")
def approve(saga_id: str, why: Why, by: By = None) -> None:
    """Let the held step run."""
    _decide(saga_id, "approve", why, by)


@approvals_app.command("reject")
def reject(saga_id: str, why: Why, by: By = None) -> None:
    """Stop the saga: nothing held runs, completed steps are compensated."""
    _decide(saga_id, "reject", why, by)
