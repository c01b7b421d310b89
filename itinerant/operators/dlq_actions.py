"""The operator's view of the dead-letter topic, without any Kafka I/O, in one import.

Entries are the records of the ``dlq`` topic; actions are what operators did to them (replayed,
discarded), kept on the ``dlq.actions`` topic so every operator sees the same history (see
docs/architecture.md#the-dead-letter-topic). ``itinerant.cli.dlq`` does the I/O and rendering.
The parts, one job each:

- :mod:`.dlq_records`: entries and actions read from their records, and entry ids;
- :mod:`.dlq_view`: the view rows, their filters and id-prefix lookup;
- :mod:`.dlq_recovery`: the refusal rules and what a replay or a discard publishes.
"""

from __future__ import annotations

from .dlq_records import ACTIONS_TOPIC, ENTRY_ID_LENGTH, Action, ActionKind, DlqEntry, entry_id
from .dlq_recovery import (
    DLQ_HEADER_PREFIX,
    discard_event,
    discard_refusal,
    next_replay_count,
    replay_message,
    replay_refusal,
    select_for_replay,
)
from .dlq_view import (
    AmbiguousEntry,
    EntryView,
    Status,
    UnknownEntry,
    filter_views,
    fold,
    parse_since,
    resolve,
)

__all__ = [
    "ACTIONS_TOPIC",
    "DLQ_HEADER_PREFIX",
    "ENTRY_ID_LENGTH",
    "Action",
    "ActionKind",
    "AmbiguousEntry",
    "DlqEntry",
    "EntryView",
    "Status",
    "UnknownEntry",
    "discard_event",
    "discard_refusal",
    "entry_id",
    "filter_views",
    "fold",
    "next_replay_count",
    "parse_since",
    "replay_message",
    "replay_refusal",
    "resolve",
    "select_for_replay",
]
