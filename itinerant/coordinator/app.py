"""The coordinator's worker process: ingress and events streams, the timer, the HTTP view."""

from __future__ import annotations

import logging

from itinerant.mesh import Mesh
from itinerant.runtime.state import open_store
from itinerant.runtime.worker import Subscription, Timer, Worker
from itinerant.security.tokens import operators as operator_tokens
from itinerant.security.tokens import view_table
from itinerant.settings import Settings

from . import http_view, repository
from .service import SERVICE, Coordinator

log = logging.getLogger(__name__)


def coordinator_worker(settings: Settings, mesh: Mesh) -> Worker:
    tokens = view_table(settings)  # docs/security-gateway.md#the-coordinators-view
    store = open_store(settings, SERVICE, (repository.SAGAS,))
    coordinator = Coordinator(settings, store, mesh)

    async def start_http_view() -> None:
        if settings.coordinator_http_port and settings.replica == 1:  # the others share its store
            if not operator_tokens(settings):
                log.warning("saga HTTP view has no operator token: it refuses every request")
            try:
                await http_view.serve(
                    store, settings.coordinator_http_host, settings.coordinator_http_port, tokens
                )
            except OSError as exc:
                log.warning(
                    "saga HTTP view not started on port %s: %s", settings.coordinator_http_port, exc
                )

    return Worker(
        service=SERVICE,
        settings=settings,
        store=store,
        subscriptions=[
            Subscription(settings.requests_topic, coordinator.handle_request),
            Subscription(settings.events_topic, coordinator.handle_event),
        ],
        timers=[Timer(settings.timer_interval_s, coordinator.tick)],
        startup=[start_http_view],
    )
