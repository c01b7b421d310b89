"""One root exception; every error says whether it is retryable and what the runtime does with it.

The class decides the outcome, never the call site:

* ``RetryableError``: retried with backoff, bounded by attempts and deadline, then dead-lettered
  with reason ``retries_exhausted``.
* ``NonRetryableError``: the message is poison; it goes to the dead-letter topic unchanged.
* ``SagaStop``: not an error of the message but of the request (business failure, budget, loop):
  the agent reports ``step_failed`` and the coordinator compensates.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import ValidationError


class Disposition(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL_SAGA = "fail_saga"


class ItinerantError(Exception):
    """Root of every error the system raises on purpose."""

    disposition: ClassVar[Disposition] = Disposition.DEAD_LETTER
    reason: str = "error"
    hint: str = ""
    attempts: int = 1

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if hint is not None:
            self.hint = hint

    @property
    def retryable(self) -> bool:
        return self.disposition is Disposition.RETRY

    def describe(self) -> str:
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text


class RetryableError(ItinerantError):
    disposition = Disposition.RETRY
    reason = "retryable"


class NonRetryableError(ItinerantError):
    disposition = Disposition.DEAD_LETTER
    reason = "non_retryable"


class SagaStop(ItinerantError):
    """Ends the saga with a reason; completed side effects are compensated."""

    disposition = Disposition.FAIL_SAGA
    reason = "business_failure"


# --- poison messages -------------------------------------------------------------------------


class UndecodableMessage(NonRetryableError):
    reason = "undecodable"
    hint = "the value must be UTF-8 JSON; fix the producer and replay from the DLQ"


class MissingHeader(NonRetryableError):
    reason = "missing_header"
    hint = (
        "agent topics need CloudEvents binary-mode headers; publish to the requests topic instead"
    )


class SchemaViolation(NonRetryableError):
    reason = "schema_violation"
    hint = "the payload does not match the JSON Schema in schemas/; fix it and replay"


class UnsupportedVersion(NonRetryableError):
    reason = "unsupported_version"
    hint = "this service does not know that message version; upgrade it, then replay"


class UnknownAgent(NonRetryableError):
    reason = "unknown_agent"
    hint = "the routing slip names an agent that does not exist; see ITINERANT_AGENTS"


class InvalidSlip(NonRetryableError):
    reason = "invalid_slip"
    hint = (
        "the ce_routingslip header must be the slip JSON of docs/wire-contract.md#the-routing-slip"
    )


class MessageTooLarge(NonRetryableError):
    reason = "message_too_large"
    hint = "keep payloads under ITINERANT_MAX_MESSAGE_BYTES; send references, not blobs"


class Unauthenticated(NonRetryableError):
    """A message whose signature is missing, wrong, or from a principal not allowed to send it
    (docs/security.md#messages)."""

    reason = "unauthenticated"
    hint = (
        "every message on the mesh but a request must be signed by a principal of the mesh; "
        "publish requests to the requests topic, or sign with that principal's key"
    )


class HandlerError(NonRetryableError):
    """An unexpected exception inside a handler: a bug until proven otherwise."""

    reason = "handler_error"
    hint = "a bug in the agent; fix it and replay the message from the DLQ"


class RetriesExhausted(NonRetryableError):
    reason = "retries_exhausted"
    hint = "a dependency kept failing; check it, then replay from the DLQ"

    def __init__(self, message: str, *, attempts: int):
        super().__init__(message)
        self.attempts = attempts


# --- retryable --------------------------------------------------------------------------------


class DependencyUnavailable(RetryableError):
    reason = "dependency_unavailable"


class BrokerUnavailable(RetryableError):
    reason = "broker_unavailable"
    hint = "start it with `itinerant up` or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"


class HandledElsewhere(NonRetryableError):
    """Another process recorded this message while this one handled it (two replicas of a
    service during a rebalance). This one's transaction is rolled back; the recorded outputs
    are the message's."""

    reason = "handled_elsewhere"


class TransactionAborted(RetryableError):
    """A Kafka transaction was aborted (a rebalance, a broker failing over, a timeout): nothing
    of it is visible, and its records are handled again or sent again."""

    reason = "transaction_aborted"


class TransactionFenced(NonRetryableError):
    """Another process took this transactional id (a newer start of the same replica): this one
    must stop, since whatever it sends now would be refused."""

    reason = "transaction_fenced"
    hint = "two processes run as the same replica; stop one (`itinerant status` lists them)"


class StoreUnavailable(RetryableError):
    """The state store cannot be reached or refused the work for now."""

    reason = "store_unavailable"
    hint = "start PostgreSQL (`make postgres` starts a local one) or unset ITINERANT_STATE_URL"


class ProviderUnavailable(RetryableError):
    reason = "llm_unavailable"
    hint = "check ITINERANT_LLM_BASE_URL and the model server"


# --- saga stops ------------------------------------------------------------------------------


class BusinessFailure(SagaStop):
    """The step could not be done for a reason of the world (sold out, over policy)."""

    reason = "business_failure"


class BudgetExceeded(SagaStop):
    def __init__(self, which: str, message: str):
        super().__init__(message, reason=f"budget_exceeded:{which}")
        self.which = which


class LoopDetected(SagaStop):
    reason = "loop_detected"


def validation_problems(exc: ValidationError, limit: int = 6, root: str = "(root)") -> str:
    """``field.path: message; ...`` for the first ``limit`` problems of a pydantic error."""
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in errors[:limit]]
    more = len(errors) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
