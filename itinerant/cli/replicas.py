"""``itinerant up --replicas search=3,coordinator=2``: several processes of a service in one
consumer group, splitting its topic's partitions (docs/operations.md#replicas)."""

from __future__ import annotations

from itinerant.errors import NonRetryableError
from itinerant.settings import MAX_REPLICAS, Settings


class BadReplicas(NonRetryableError):
    """``--replicas`` names something that cannot run as replicas, or a count out of range."""

    reason = "bad_replicas"
    hint = "write --replicas NAME=COUNT[,NAME=COUNT...], e.g. --replicas search=3,coordinator=2"


def parse_replicas(text: str) -> dict[str, int]:
    """``"search=3,book=2"`` as ``{"search": 3, "book": 2}``."""
    counts: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, count = part.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise BadReplicas(f"--replicas: {part!r} is not NAME=COUNT")
        counts[name.strip()] = int(count)
    return counts


def check_replicas(replicas: dict[str, int], settings: Settings) -> None:
    """Refuse what cannot run as replicas: only the coordinator and agents scale (the gateway,
    the console and side servers each own a port), only in the process-per-service layout, and
    no more replicas than the topic has partitions (one more would idle)."""
    if not replicas:
        return
    if settings.layout == "shared":
        raise BadReplicas(
            "--replicas needs ITINERANT_LAYOUT=process-per-service: the shared layout runs "
            "every agent in one process"
        )
    scalable = ["coordinator", *settings.agents]
    unknown = sorted(set(replicas) - set(scalable))
    if unknown:
        raise BadReplicas(
            f"--replicas: {', '.join(unknown)} cannot run as replicas; "
            f"these can: {', '.join(scalable)}"
        )
    most = min(settings.partitions, MAX_REPLICAS)
    for name, count in replicas.items():
        if not 1 <= count <= most:
            raise BadReplicas(
                f"--replicas: {name}={count}; between 1 and {most} (the partitions of its "
                "topic, ITINERANT_PARTITIONS: a replica without a partition idles)"
            )
