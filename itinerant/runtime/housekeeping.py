"""A service's housekeeping (docs/operations.md#growth): its stores' sizes as a metric, and its
inbox and outbox pruned on a schedule, on the worker's own event loop between records."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from itinerant.observability import metrics
from itinerant.runtime.outcome import Processed
from itinerant.runtime.store import STORE_ERRORS, StateStore
from itinerant.settings import Settings

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 30.0


class Housekeeping:
    def __init__(self, service: str, stores: Sequence[StateStore], settings: Settings) -> None:
        self.service = service
        self.stores = list(stores)
        self.settings = settings
        self.last_prune = time.monotonic()  # not at start: a restart loop must not prune each time
        metrics.STORE_PRUNED.labels(service)  # the series exists (at 0) before the first prune

    async def tick(self) -> list[Processed]:
        for store in self.stores:
            metrics.STORE_BYTES.labels(self.service, store.name).set(store.size_bytes())
        if time.monotonic() - self.last_prune >= self.settings.prune_interval_s:
            self.last_prune = time.monotonic()
            self.prune()
        return []

    def prune(self) -> int:
        """Forget processed ids older than the retention, and sent outbox rows; returns how many
        inbox rows went. A store that is busy now is pruned next time."""
        removed = 0
        for store in self.stores:
            try:
                gone = store.prune(self.settings.inbox_retention_s)
            except STORE_ERRORS as exc:
                log.warning("could not prune %s now (%s); next time", store.name, exc)
                continue
            removed += gone
            metrics.STORE_PRUNED.labels(self.service).inc(gone)
            if gone:
                log.info("pruned %d inbox row(s) of %s", gone, store.name)
        return removed
