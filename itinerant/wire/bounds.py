"""Bounded inputs on decode (docs/security.md#bounded-inputs): how many headers a record may carry,
how large each and all of them may be, and what a saga id may look like, checked before anything
of the record is parsed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from itinerant.errors import NonRetryableError

if TYPE_CHECKING:
    from itinerant.settings import Settings

SLIP_HEADER = "ce_routingslip"
BUDGET_HEADER = "ce_budget"
SAGA_HEADER = "ce_sagaid"


class OversizedHeader(NonRetryableError):
    """Too many headers, or a header (or all of them) over its cap."""

    reason = "oversized_header"
    hint = (
        "keep headers within the ITINERANT_MAX_HEADER* settings (docs/security.md#bounded-inputs); "
        "send data in the payload, not in headers"
    )


class InvalidSagaId(NonRetryableError):
    """A saga id that is empty, too long, or carries control or invisible characters."""

    reason = "invalid_saga_id"
    hint = (
        "a saga id (request_id, ce_sagaid) is 1 to ITINERANT_MAX_SAGA_ID_CHARS printable "
        "characters, without control characters"
    )


@dataclass(frozen=True, slots=True)
class InputBounds:
    """The caps of docs/security.md#bounded-inputs; the defaults are the settings' defaults."""

    max_headers: int = 64
    max_header_bytes: int = 4_096
    max_headers_total_bytes: int = 32_768
    max_slip_bytes: int = 8_192
    max_budget_bytes: int = 1_024
    max_saga_id_chars: int = 200

    @classmethod
    def of(cls, settings: Settings) -> InputBounds:
        return cls(
            max_headers=settings.max_headers,
            max_header_bytes=settings.max_header_bytes,
            max_headers_total_bytes=settings.max_headers_total_bytes,
            max_slip_bytes=settings.max_slip_bytes,
            max_budget_bytes=settings.max_budget_bytes,
            max_saga_id_chars=settings.max_saga_id_chars,
        )

    def check_headers(self, headers: Iterable[tuple[str, bytes | None]]) -> None:
        """Raise :class:`OversizedHeader` naming the first cap a record's headers break."""
        total = 0
        for count, (name, value) in enumerate(headers, start=1):
            if count > self.max_headers:
                raise OversizedHeader(
                    f"the message has more than {self.max_headers} headers (ITINERANT_MAX_HEADERS)"
                )
            name_bytes = len(name.encode("utf-8", "replace"))
            total += name_bytes + len(value or b"")
            cap, setting = self._cap(name)
            # The slip's and the budget's caps are on the value, as on encode; others' on both.
            size = len(value or b"") + (0 if setting != _HEADER_SETTING else name_bytes)
            if size > cap:
                raise OversizedHeader(
                    f"header {_shown(name)!r} is {size} bytes, over the {cap}-byte cap ({setting})"
                )
        if total > self.max_headers_total_bytes:
            raise OversizedHeader(
                f"the message's headers are {total} bytes together, over the "
                f"{self.max_headers_total_bytes}-byte cap (ITINERANT_MAX_HEADERS_TOTAL_BYTES)"
            )

    def check_saga_id(self, saga_id: str, what: str = SAGA_HEADER) -> None:
        """Raise :class:`InvalidSagaId` unless ``saga_id`` is a usable saga id."""
        problem = self.saga_id_problem(saga_id)
        if problem:
            raise InvalidSagaId(f"{what} {problem}")

    def saga_id_problem(self, saga_id: str) -> str | None:
        if not saga_id:
            return "is empty"
        if len(saga_id) > self.max_saga_id_chars:
            return (
                f"is {len(saga_id)} characters, over {self.max_saga_id_chars} "
                "(ITINERANT_MAX_SAGA_ID_CHARS)"
            )
        if not saga_id.isprintable():
            return f"{_shown(saga_id)!r} has control or invisible characters"
        return None

    def check_record(self, headers: Iterable[tuple[str, bytes | None]]) -> None:
        """Every bound on a record's headers, then the saga id if it carries one."""
        headers = list(headers)
        self.check_headers(headers)
        for name, value in reversed(headers):  # the last one wins, as InRecord.header reads
            if name == SAGA_HEADER and value:  # an empty one is reported as missing
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    return  # the decoder names this one (reason undecodable)
                self.check_saga_id(text)
                return

    def _cap(self, name: str) -> tuple[int, str]:
        if name == SLIP_HEADER:
            return self.max_slip_bytes, "ITINERANT_MAX_SLIP_BYTES"
        if name == BUDGET_HEADER:
            return self.max_budget_bytes, "ITINERANT_MAX_BUDGET_BYTES"
        return self.max_header_bytes, _HEADER_SETTING


_HEADER_SETTING = "ITINERANT_MAX_HEADER_BYTES"
DEFAULT_BOUNDS = InputBounds()


def _shown(text: str, limit: int = 60) -> str:
    """A short, printable rendering of untrusted text for an error message."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("unicode_escape").decode("ascii")
