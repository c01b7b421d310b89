"""A small read-only HTTP view of saga state for operators and the CLI (``itinerant status``).

GET /sagas/<id>            one saga: state, steps with timings, timeline
GET /sagas?state=&limit=   recent sagas
GET /healthz               200 while the coordinator runs
"""

from __future__ import annotations

import json

from aiohttp import web

from itinerant.runtime.store import Store

from . import repository


def make_app(store: Store) -> web.Application:
    async def one(request: web.Request) -> web.Response:
        saga = repository.load(store.connection, request.match_info["saga_id"])
        if saga is None:
            return web.json_response({"error": "no such saga"}, status=404)
        return web.Response(text=saga.model_dump_json(), content_type="application/json")

    async def many(request: web.Request) -> web.Response:
        state = request.query.get("state")
        limit = min(int(request.query.get("limit", "50")), 1000)
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

    app = web.Application()
    app.add_routes(
        [web.get("/sagas/{saga_id}", one), web.get("/sagas", many), web.get("/healthz", health)]
    )
    return app


async def serve(store: Store, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
