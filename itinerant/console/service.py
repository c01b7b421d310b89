"""``itinerant worker console``: serve the console until SIGTERM/SIGINT; ``<data_dir>/run/
console.ready`` holds its URL while it serves (docs/console.md#running-it)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from itinerant.errors import NonRetryableError
from itinerant.security.tokens import is_loopback, operators
from itinerant.settings import Settings

from .app import make_app

log = logging.getLogger(__name__)
SERVICE = "console"


class ConsoleConfigError(NonRetryableError):
    """The console cannot start as configured."""

    reason = "console_config"


def console_url(settings: Settings) -> str:
    host = settings.console_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{settings.console_port}/"


def check(settings: Settings) -> None:
    if not operators(settings):
        raise ConsoleConfigError(
            "no operator token: the console logs operators in with one",
            hint="set ITINERANT_OPERATOR_TOKENS, or start the mesh with `itinerant up`, which "
            "generates one in <data dir>/tokens.json",
        )
    if not is_loopback(settings.console_host):
        log.warning(
            "the console binds %s, not loopback: its logins cross the network in clear "
            "unless a TLS proxy is in front (docs/console.md#running-it)",
            settings.console_host,
        )


async def serve(settings: Settings) -> None:
    runner = web.AppRunner(make_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.console_host, settings.console_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConsoleConfigError(
            f"the console cannot listen on {settings.console_host}:{settings.console_port} ({exc})",
            hint="set ITINERANT_CONSOLE_PORT to a free port (0: no console)",
        ) from exc
    ready = settings.data_dir / "run" / f"{SERVICE}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready.write_text(console_url(settings))
    log.info("console serving %s", console_url(settings))
    try:
        await stop.wait()
    finally:
        ready.unlink(missing_ok=True)
        await runner.cleanup()


def main(settings: Settings) -> None:
    check(settings)
    asyncio.run(serve(settings))
