"""The operator web console: an aiohttp app serving a small page and a JSON API (docs/console.md).

GET  /                         the page (static/index.html; scripts and styles from /static/)
GET  /login, POST /login       the login form; a good operator token opens a session (cookie)
POST /logout
GET  /api/me                   who is logged in
GET  /api/sagas?state=&limit=  the coordinator's saga list, as the logged-in operator
GET  /api/sagas/<id>           one saga
GET  /api/sagas/<id>/trace     its spans, as ``itinerant trace --json`` gives them
GET  /api/agents               per service: up, msg/s, failures, retries, lag, p99, circuits
GET  /api/charts               the sampled series of the dashboard's main panels
GET  /api/dead-letters         every dead letter with its status
GET  /api/dead-letters/<id>    one, with headers and payload
POST /api/dead-letters/<id>/replay   {"force": bool}
POST /api/dead-letters/<id>/discard  {"why": str, "force": bool}
POST /api/approvals/<saga id>        {"decision": "approve"|"reject", "why": str}
GET  /healthz

Every /api/ path needs a session; a POST also needs the header ``X-Itinerant-Console: 1`` (a
page of another site cannot send it without the browser asking first, which we never allow).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from itinerant.cli.trace import find_traces, trace_dict
from itinerant.observability.service_metrics import scrape_all
from itinerant.security.tokens import view_table
from itinerant.settings import Settings

from . import actions
from .metrics import Sampler
from .sessions import COOKIE, LoginRefused, Session, Sessions

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CSRF_HEADER = "X-Itinerant-Console"
PUBLIC = frozenset({"/login", "/healthz"})
SESSION_KEY = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: No inline scripts, nothing from another origin (docs/console.md#safety).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _guard(sessions: Sessions) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _checked(request, handler)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC or request.path.startswith("/static/"):
            return await handler(request)
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.path.startswith("/api/"):
                return _error(401, "not logged in (or the session expired): log in again")
            raise web.HTTPSeeOther("/login")
        if request.method == "POST" and request.headers.get(CSRF_HEADER) != "1":
            return _error(403, f"a console action needs the header {CSRF_HEADER}: 1")
        request[SESSION_KEY] = session
        return await handler(request)

    return check


class Console:
    """The routes, bound to the settings and the open sessions."""

    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self.coordinator = f"http://127.0.0.1:{settings.coordinator_http_port}"
        self.http: aiohttp.ClientSession | None = None
        self.sampler = Sampler(
            partial(scrape_all, settings), settings.console_sample_s, settings.console_history_s
        )

    async def _view(self, request: web.Request, path: str) -> web.Response:
        """The coordinator's view at ``path``, asked with the operator's own token."""
        session = request[SESSION_KEY]
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self.http.get(
                self.coordinator + path, headers=session.authorization()
            ) as answer:
                body = await answer.read()
                return web.Response(
                    body=body, status=answer.status, content_type="application/json"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(
                502, f"the coordinator's saga view at {self.coordinator} does not answer ({exc})"
            )

    async def _blocking(self, call: Callable[[], Any]) -> web.Response:
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        except actions.ActionRefused as exc:
            return _error(exc.status, str(exc))
        if isinstance(result, str):
            return web.json_response({"ok": True, "message": result})
        return web.json_response(result)

    # -- pages ---------------------------------------------------------------------------------

    async def index(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def login_page(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        try:
            session_id, session = self.sessions.login(token if isinstance(token, str) else "")
        except LoginRefused as exc:
            raise web.HTTPSeeOther(f"/login?error={quote(str(exc))}") from None
        log.info("console login as %s", session.principal)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            session_id,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=int(self.settings.console_session_s),
        )
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.logout(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # -- the API -------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        principal = request[SESSION_KEY].principal
        return web.json_response(
            {"principal": principal, "approver": principal in self.settings.approvers}
        )

    async def sagas(self, request: web.Request) -> web.Response:
        query = {k: v for k, v in request.query.items() if k in ("state", "limit") and v}
        suffix = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return await self._view(request, "/sagas" + (f"?{suffix}" if suffix else ""))

    async def saga(self, request: web.Request) -> web.Response:
        return await self._view(request, f"/sagas/{quote(request.match_info['id'], safe='')}")

    async def trace(self, request: web.Request) -> web.Response:
        saga_id = request.match_info["id"]
        folder = self.settings.data_dir / "traces"

        def spans() -> dict[str, Any]:
            found = find_traces(folder, saga_id)
            return {"saga_id": saga_id, "traces": [trace_dict(t) for t in found]}

        return await self._blocking(spans)

    async def agents(self, _: web.Request) -> web.Response:
        view = self.sampler.latest
        if view is None:
            view = await asyncio.get_running_loop().run_in_executor(None, self.sampler.sample)
        return web.json_response(view.as_dict())

    async def charts(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"every_s": self.sampler.every_s, "charts": self.sampler.ring.series()}
        )

    async def dead_letters(self, _: web.Request) -> web.Response:
        return await self._blocking(partial(actions.dead_letters, self.settings))

    async def dead_letter(self, request: web.Request) -> web.Response:
        entry = request.match_info["id"]
        return await self._blocking(partial(actions.dead_letter, self.settings, entry))

    async def replay(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return await self._blocking(
            partial(
                actions.replay,
                self.settings,
                request.match_info["id"],
                request[SESSION_KEY].principal,
                force=body.get("force") is True,
            )
        )

    async def discard(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return await self._blocking(
            partial(
                actions.discard,
                self.settings,
                request.match_info["id"],
                str(body.get("why", "")),
                request[SESSION_KEY].principal,
                force=body.get("force") is True,
            )
        )

    async def decide(self, request: web.Request) -> web.Response:
        body = await _json(request)
        decision = body.get("decision")
        if decision not in ("approve", "reject"):
            return _error(400, 'decision must be "approve" or "reject"')
        saga_id = request.match_info["id"]
        held = await self._view(request, f"/sagas/{quote(saga_id, safe='')}")
        if held.status != 200:
            return held
        assert isinstance(held.body, bytes)
        state = json.loads(held.body).get("state")
        if state != "awaiting_approval":
            return _error(409, f"saga {saga_id} is {state}, not awaiting approval")
        return await self._blocking(
            partial(
                actions.decide,
                self.settings,
                saga_id,
                "approve" if decision == "approve" else "reject",
                str(body.get("why", "")),
                request[SESSION_KEY].principal,
            )
        )

    async def start(self, _: web.Application) -> None:
        if self.settings.metrics_port_base:
            self.sampler.start()

    async def close(self, _: web.Application) -> None:
        await self.sampler.stop()
        if self.http is not None:
            await self.http.close()


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "send a JSON object"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "send a JSON object"}), content_type="application/json"
        )
    return body


def make_app(settings: Settings) -> web.Application:
    sessions = Sessions(view_table(settings), settings.console_session_s)
    console = Console(settings, sessions)
    app = web.Application(middlewares=[_guard(sessions)], client_max_size=64 * 1024)
    app.on_startup.append(console.start)
    app.on_cleanup.append(console.close)
    app.add_routes(
        [
            web.get("/", console.index),
            web.get("/login", console.login_page),
            web.post("/login", console.login),
            web.post("/logout", console.logout),
            web.get("/healthz", console.health),
            web.get("/api/me", console.me),
            web.get("/api/sagas", console.sagas),
            web.get("/api/sagas/{id}", console.saga),
            web.get("/api/sagas/{id}/trace", console.trace),
            web.get("/api/agents", console.agents),
            web.get("/api/charts", console.charts),
            web.get("/api/dead-letters", console.dead_letters),
            web.get("/api/dead-letters/{id}", console.dead_letter),
            web.post("/api/dead-letters/{id}/replay", console.replay),
            web.post("/api/dead-letters/{id}/discard", console.discard),
            web.post("/api/approvals/{id}", console.decide),
            web.static("/static", STATIC),
        ]
    )
    return app
