"""A small read-only HTTP view of saga state for operators and the CLI (``itinerant status``).

GET /sagas/<id>            one saga: state, steps with timings, timeline
GET /sagas?state=&limit=   recent sagas (limit 1..1000, default 50)
GET /healthz               200 while the coordinator runs

Every path but /healthz requires an operator's token, ``Authorization: Bearer <token>``: 401
without a known token, 403 for a caller's token that is not an operator's
(docs/security-gateway.md#the-coordinators-view). It binds loopback unless
ITINERANT_COORDINATOR_HTTP_HOST says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from itinerant.runtime.store import StateStore
from itinerant.security.tokens import TokenTable

from . import repository

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
PUBLIC = frozenset({"/healthz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refuse(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="itinerant"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def operator_only(tokens: TokenTable) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        principal = tokens.identify_header(request.headers.get("Authorization", ""))
        if principal is None:
            return _refuse(
                401,
                "send an operator's token as 'Authorization: Bearer <token>' (ITINERANT_OPERATOR_"
                "TOKENS; `itinerant up` generates one in <data dir>/tokens.json)",
            )
        if not principal.operator:
            return _refuse(
                403,
                f"principal {principal.name!r} is not an operator (ITINERANT_OPERATORS); the "
                "saga view is for operators",
            )
        return await handler(request)

    return check


def read_limit(raw: str | None) -> int:
    """``limit`` as given, 1..1000; raises ``HTTPBadRequest`` saying what is allowed."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"limit must be an integer from 1 to {MAX_LIMIT}"}),
            content_type="application/json",
        )
    return int(raw)


def make_app(store: StateStore, tokens: TokenTable) -> web.Application:
    async def one(request: web.Request) -> web.Response:
        saga = repository.load(store.connection, request.match_info["saga_id"])
        if saga is None:
            return web.json_response({"error": "no such saga"}, status=404)
        return web.Response(text=saga.model_dump_json(), content_type="application/json")

    async def many(request: web.Request) -> web.Response:
        state = request.query.get("state")
        limit = read_limit(request.query.get("limit"))
        sagas = repository.recent(store.connection, state, limit)
        body = json.dumps(
            {
                "counts": repository.counts_by_state(store.connection),
                "sagas": [json.loads(s.model_dump_json()) for s in sagas],
            }
        )
        return web.Response(text=body, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[operator_only(tokens)])
    app.add_routes(
        [web.get("/sagas/{saga_id}", one), web.get("/sagas", many), web.get("/healthz", health)]
    )
    return app


async def serve(store: StateStore, host: str, port: int, tokens: TokenTable) -> web.AppRunner:
    runner = web.AppRunner(make_app(store, tokens), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
