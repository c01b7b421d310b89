"""The ``itinerant`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from itinerant.brokers.client_security import client_security
from itinerant.brokers.connection import require_broker
from itinerant.errors import ItinerantError
from itinerant.mcp.cli import mcp_app
from itinerant.mesh import load_mesh
from itinerant.observability.logs import configure_logging
from itinerant.security.tokens import TOKEN_HINT, operator_headers
from itinerant.security.tokens import usage_lines as token_usage
from itinerant.settings import Settings

from . import demo as demo_module
from . import scaling
from .approvals import approvals_app
from .context import cli_mesh, cli_settings, fail
from .deploy import deploy_app
from .dlq import dlq_app
from .kafka_io import publish_request, wait_for_results
from .render import saga_tables
from .replicas import BadReplicas, check_replicas, parse_replicas
from .requests import RequestError, load_request, read_source, request_from_fields
from .secrets import secrets_app
from .supervisor import NO_METRICS, Supervisor
from .terminal import emit_json, safe
from .top import top_command
from .trace import trace_command
from .up_file import pid_alive, supervisor_pid, up_file

app = typer.Typer(
    help="Itinerant: AI agents as ordinary, well-behaved Kafka microservices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Topic administration.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(approvals_app, name="approvals")
app.add_typer(deploy_app, name="deploy")
app.add_typer(secrets_app, name="secrets")
app.add_typer(mcp_app, name="mcp")
console = Console()
err = Console(stderr=True)


AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="the application, package.module:mesh (default: ITINERANT_APP, else the "
        "reference mesh)",
    ),
]


def _use_app(app_spec: str | None) -> None:
    if app_spec is not None:
        os.environ["ITINERANT_APP"] = app_spec  # read by Settings here and in every child


@app.callback()
def _main(
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="the application, package.module:mesh (default: ITINERANT_APP, else the "
            "reference application)",
        ),
    ] = None,
) -> None:
    if app_spec is not None:
        os.environ["ITINERANT_APP"] = app_spec  # read by Settings here and in every child


_settings = cli_settings


_fail = fail


# --- processes ------------------------------------------------------------------------------


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="coordinator, gateway, mcp or an agent name")],
    app_spec: AppOption = None,
) -> None:
    """Run one service in the foreground (what `up` starts for each service)."""
    from itinerant.processes import build_worker

    _use_app(app_spec)
    settings = _settings()
    if service == "console":
        from itinerant.console.service import main as console_main

        configure_logging(service, settings.log_level)
        try:
            console_main(settings)
        except ItinerantError as exc:
            raise _fail(exc.describe(), 2) from exc
        return
    if service == "gateway":
        from itinerant.gateway.app import main as gateway_main

        configure_logging(service, settings.log_level)
        try:
            gateway_main(settings)
        except ItinerantError as exc:
            raise _fail(exc.describe(), 2) from exc
        return
    if service == "mcp":
        from itinerant.mcp.app import main as mcp_main

        configure_logging(service, settings.log_level)
        try:
            mcp_main(settings)
        except ItinerantError as exc:
            raise _fail(exc.describe(), 2) from exc
        return
    side = load_mesh(settings.app).side_servers()
    if service in side:
        configure_logging(service, settings.log_level)
        try:
            side[service](settings)
        except ItinerantError as exc:
            raise _fail(exc.describe(), 2) from exc
        return
    if service not in [*settings.service_names(), "agents"]:
        raise _fail(f"no service {service!r}; services: {', '.join(settings.service_names())}", 2)
    configure_logging(service, settings.log_level)
    try:
        require_broker(
            settings.kafka_bootstrap_servers, settings.broker_timeout_s, client_security(settings)
        )
        build_worker(service, settings, load_mesh(settings.app)).run()
    except ItinerantError as exc:
        raise _fail(exc.describe(), 2) from exc


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="run in the background")] = False,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 90.0,
    replicas: Annotated[
        str,
        typer.Option(
            help="processes per service, e.g. search=3,coordinator=2 (one consumer group "
            "each; share their state through ITINERANT_STATE_URL or the data dir)"
        ),
    ] = "",
    app_spec: AppOption = None,
) -> None:
    """Start the broker (ITINERANT_BROKER: kafka, tansu or external), topics and services."""
    _use_app(app_spec)
    settings = _settings()
    try:
        counts = parse_replicas(replicas)
        supervisor = Supervisor(settings, replicas=counts)
    except ItinerantError as exc:
        raise _fail(exc.describe(), 2) from exc
    if detach:
        _up_detached(settings, ready_timeout, replicas, supervisor.planned())
        return
    stopping = _install_stop_handler()
    try:
        supervisor.start()
        supervisor.wait_ready(ready_timeout)
    except (ItinerantError, TimeoutError) as exc:
        supervisor.stop()
        raise _fail(exc.describe() if isinstance(exc, ItinerantError) else str(exc)) from exc
    _print_up(settings, supervisor)
    last_report = 0.0
    try:
        while not stopping():
            supervisor.supervise_once()
            if supervisor.given_up():
                break
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                supervisor.rotate_logs()
                for warning in supervisor.storage_report():
                    err.print(f"[yellow]warning:[/yellow] {warning}")
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    console.print("stopping services and broker ...")
    supervisor.stop()
    try:
        supervisor.raise_if_given_up()
    except ItinerantError as exc:
        raise _fail(exc.describe()) from exc


def _install_stop_handler() -> Any:
    flag = {"stop": False}

    def handler(_signum: int, _frame: Any) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: flag["stop"]


def _print_up(settings: Settings, supervisor: Supervisor) -> None:
    settings = supervisor.settings  # the broker actually started (Kafka, or Tansu as fallback)
    for warning in supervisor.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    broker = {
        "kafka": "embedded Apache Kafka",
        "tansu": "embedded Tansu (development only)",
        "external": "external Kafka",
    }[settings.broker]
    console.print(f"[green]up[/green]: {broker} at {settings.kafka_bootstrap_servers}")
    for name, proc in supervisor.procs.items():
        port = (
            settings.metrics_port(proc.service, proc.replica)
            if proc.service not in NO_METRICS
            else None
        )
        metrics = f"http://127.0.0.1:{port}/metrics" if port else "off"
        console.print(f"  {name:<12} pid {proc.pid:<8} metrics {metrics:<34} log {proc.log_path}")
    console.print(f"  saga view   http://127.0.0.1:{settings.coordinator_http_port}/sagas")
    if settings.mcp_port:
        console.print(
            f"  MCP server  http://127.0.0.1:{settings.mcp_port}/mcp (bearer: the tokens below; "
            "docs/mcp.md)"
        )
    if "console" in supervisor.procs:
        from itinerant.console.service import console_url

        console.print(
            f"  console     {console_url(settings)} (log in with the operator token below)"
        )
    for line in token_usage(settings, show_secret=console.is_terminal):  # never into a log file
        console.print(line, markup=False, highlight=False)


def _up_detached(
    settings: Settings, ready_timeout: float, replicas: str, services: list[str]
) -> None:
    run_file = up_file(settings.data_dir)
    if supervisor_pid(settings.data_dir) is not None:
        raise _fail(f"already up (see {run_file}); `itinerant down` first")
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "up.log").open("ab") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "itinerant.cli.main",
                "up",
                "--ready-timeout",
                str(ready_timeout),
                *(["--replicas", replicas] if replicas else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_timeout + 15
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = (log_dir / "up.log").read_text()[-2000:]
            raise _fail(f"`itinerant up` exited with {child.returncode}:\n{tail}")
        ready = [s for s in services if (settings.data_dir / "run" / f"{s}.ready").exists()]
        if run_file.exists() and len(ready) == len(services):
            console.print(
                f"[green]up[/green] in the background (pid {child.pid}); "
                f"logs in {log_dir}; stop with `itinerant down`"
            )
            for line in token_usage(settings, show_secret=console.is_terminal):
                console.print(line, markup=False, highlight=False)
            return
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGTERM)
    raise _fail(f"services not ready after {ready_timeout:.0f}s; see {log_dir}")


@app.command()
def down(timeout: Annotated[float, typer.Option(help="seconds to wait")] = 30.0) -> None:
    """Stop what `itinerant up --detach` started."""
    settings = _settings()
    run_file = up_file(settings.data_dir)
    if not run_file.exists():
        console.print(f"nothing is running (no run file at {run_file})")
        return
    pid = supervisor_pid(settings.data_dir)
    if pid is None:
        run_file.unlink(missing_ok=True)
        console.print("nothing is running (stale run file removed)")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        raise _fail(f"supervisor {pid} did not stop within {timeout:.0f}s")
    console.print("[green]down[/green]")


@app.command()
def scale(
    replicas: Annotated[
        str, typer.Argument(help="NAME=COUNT[,NAME=COUNT...], e.g. search=3,coordinator=2")
    ],
    timeout: Annotated[float, typer.Option(help="seconds to wait for new replicas")] = 90.0,
    app_spec: AppOption = None,
) -> None:
    """Change how many replicas of a service the running `itinerant up` runs."""
    _use_app(app_spec)
    settings = _settings()
    run_dir = settings.data_dir / "run"
    try:
        counts = parse_replicas(replicas)
        if not counts:
            raise BadReplicas("name at least one NAME=COUNT")
        check_replicas(counts, load_mesh(settings.app).bind(settings))
        if supervisor_pid(settings.data_dir) is None:
            raise scaling.NothingUp(f"no `itinerant up` runs on {settings.data_dir}")
        request = scaling.ScaleRequest(counts)
        since = time.time()
        scaling.write_request(run_dir, request)
        result = scaling.wait_for_result(run_dir, request, timeout_s=30.0)
        if result.error:
            raise BadReplicas(result.error)
        scaling.wait_ready(run_dir, result.started, since, timeout)
    except ItinerantError as exc:
        raise _fail(exc.describe(), 2) from exc
    if not result.started and not result.stopped:
        console.print("nothing to change: already running that many")
    for name in result.started:
        console.print(f"[green]started[/green] {name} (ready)")
    for name in result.stopped:
        console.print(f"[yellow]stopped[/yellow] {name}")


# --- topics ---------------------------------------------------------------------------------


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic with explicit partition counts (idempotent)."""
    from itinerant.brokers.topics import ensure_topics

    settings = _settings()
    try:
        created = ensure_topics(settings)
    except ItinerantError as exc:
        raise _fail(exc.describe()) from exc
    for topic in settings.all_topics():
        mark = "created" if topic in created else "exists"
        console.print(f"  {topic:<32} {settings.partitions} partitions  {mark}")


@topics_app.command("delete")
def topics_delete(
    yes: Annotated[
        bool, typer.Option("--yes", help="really delete (their messages are lost)")
    ] = False,
) -> None:
    """Delete every topic of this mesh (to re-create them with another partition count)."""
    from itinerant.brokers.topics import delete_topics

    settings = _settings()
    if not yes:
        raise _fail(
            f"this deletes {len(settings.all_topics())} topics and every message in them; "
            "stop the services first (`itinerant down`), then run again with --yes",
            2,
        )
    try:
        deleted = delete_topics(settings, settings.all_topics())
    except ItinerantError as exc:
        raise _fail(exc.describe()) from exc
    for topic in settings.all_topics():
        console.print(f"  {topic:<32} {'deleted' if topic in deleted else 'absent'}")


@topics_app.command("list")
def topics_list() -> None:
    """Topics with stored messages per partition (on Tansu, warns near its limits)."""
    from itinerant.brokers.topics import partition_high_watermarks, storage_warnings

    settings = _settings()
    try:
        marks = partition_high_watermarks(settings)
    except ItinerantError as exc:
        raise _fail(exc.describe()) from exc
    for (topic, partition), high in sorted(marks.items()):
        console.print(f"  {topic:<32} [{partition}] {high:>8} messages")
    for warning in storage_warnings(marks) if settings.broker == "tansu" else []:
        err.print(f"[yellow]warning:[/yellow] {warning}")


# --- requests -------------------------------------------------------------------------------


@app.command()
def publish(
    source: Annotated[str | None, typer.Argument(help="request file, or - for stdin")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            "-f",
            help="a request field as key=value (repeatable; dotted keys nest, JSON values are "
            "parsed), e.g. -f name=Ada -f customer.city=Oslo -f quantity=2",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow it to its result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 60.0,
    principal: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="sign the request as this principal (its key in the keys folder): the saga "
            "acts for it (what it booked is its own); unsigned requests are anonymous",
        ),
    ] = None,
) -> None:
    """Publish a request to the requests topic; prints its saga id."""
    mesh, settings = cli_mesh()
    try:
        if source is not None:
            body, where = read_source(source)
            request = load_request(body, where, mesh.request_model)
        else:
            request = request_from_fields(field or [], mesh.request_model)
    except (RequestError, ValueError) as exc:
        raise _fail(str(exc), 2) from exc
    try:
        require_broker(
            settings.kafka_bootstrap_servers, settings.broker_timeout_s, client_security(settings)
        )
        saga_id = publish_request(settings, request, principal=principal)
    except ItinerantError as exc:
        raise _fail(exc.describe()) from exc
    console.print(safe(saga_id))
    if not wait:
        return
    results = wait_for_results(settings, {saga_id}, timeout)
    if saga_id not in results:
        raise _fail(
            f"no result within {timeout:.0f}s; `itinerant status {saga_id}` shows where it is", 3
        )
    result = results[saga_id]
    emit_json(result)
    if result["status"] != "completed":
        raise typer.Exit(4)


@app.command()
def status(
    saga_id: Annotated[
        str | None, typer.Argument(help="a saga id; none: the local services")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A saga's state, each step with timings, and its timeline of events; without a saga id,
    the local services: running or not, and the size of their stores, logs and traces."""
    settings = _settings()
    if saga_id is None:
        from .local_status import local_report, report_data, report_table

        rows = local_report(settings)
        if as_json:
            emit_json(report_data(rows))
        else:
            console.print(report_table(rows, settings))
        return
    url = f"http://127.0.0.1:{settings.coordinator_http_port}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=operator_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            saga = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _fail(f"no saga {saga_id} (not yet started, or a typo)", 3) from exc
        if exc.code in (401, 403):
            raise _fail(
                f"the saga view refused the operator token ({exc.code}); {TOKEN_HINT}"
            ) from exc
        raise _fail(f"coordinator answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _fail(
            f"the coordinator's saga view at {url} does not answer ({exc}); "
            "is `itinerant up` running?"
        ) from exc
    if as_json:
        emit_json(saga)
        return
    for table in saga_tables(saga):
        console.print(table)


@app.command()
def demo(
    sagas: Annotated[int, typer.Option(help="extra sample requests to show throughput")] = 40,
    timeout: Annotated[float, typer.Option(help="seconds to wait for all results")] = 120.0,
    examples: Annotated[Path, typer.Option(help="folder of sample requests")] = Path(
        "examples/requests"
    ),
    app_spec: AppOption = None,
) -> None:
    """Run the whole system on the embedded broker, publish the samples, show progress live."""
    _use_app(app_spec)
    code = demo_module.run(_settings(), examples, sagas, timeout, console)
    raise typer.Exit(code)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def kcat(ctx: typer.Context) -> None:
    """Run kcat against our Kafka (`itinerant kcat -P -t itinerant.requests`); -b and the broker
    security (-F, a 0600 properties file) are added."""
    from .kcat import kcat_path, run_kcat

    binary = kcat_path()
    if binary is None:
        raise _fail("kcat is not installed: `apt-get install kcat` (make test does it)")
    try:
        code = run_kcat(binary, _settings(), list(ctx.args))
    except ItinerantError as exc:
        raise _fail(exc.describe(), 2) from exc
    raise typer.Exit(code)


@app.command()
def agents(
    url: Annotated[str | None, typer.Option(help="gateway base URL (default: settings)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the mesh's A2A agent card (skills, modes, auth)."""
    from itinerant.gateway.cli import agents as show

    show(url=url, as_json=as_json)


app.command("trace")(trace_command)
app.command("top")(top_command)


@app.command("schemas")
def schemas_export(
    out: Annotated[Path, typer.Option(help="folder to write")] = Path("schemas"),
) -> None:
    """Export the JSON Schema of every message type to `schemas/`."""
    from itinerant.wire.schemas import export

    mesh = cli_mesh()[0]
    for path in export(out, mesh):
        console.print(f"  wrote {path}")


if __name__ == "__main__":
    app()
