"""Fault injection for chaos tests: ``ITINERANT_FAULT_INVENTORY_RATE`` (0..1) makes a share of
inventory calls fail with a retryable error, as a flaky dependency would."""

from __future__ import annotations

import random

from itinerant.errors import DependencyUnavailable
from itinerant.runtime.agent import HandlerContext
from services.settings import travel_settings


def inject_inventory_faults(ctx: HandlerContext) -> None:
    rate = travel_settings().fault_inventory_rate
    if rate > 0 and random.random() < rate:
        raise DependencyUnavailable(
            "inventory did not answer (injected fault)", reason="inventory_unavailable"
        )
