"""Signed messages and a tamper-evident routing slip (docs/security.md#messages).

A message is signed by the principal that sends it, over its id, type, source, saga id,
causation id, customer, routing slip, budget and a digest of its payload; the signature and the
signer are carried as ``ce_signature`` and ``ce_signer``. A receiver believes a message when the
signature verifies against the mesh's public key of that signer and the source names the same
principal (``/itinerant/<principal>`` or ``/clients/<principal>``).

Each visit in a slip is signed by the service that performed it (the coordinator signs an
approval gate's visit) and chained to the visit of the step before it, so a step with side
effects can check that the steps it requires really ran, whoever forwarded the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence

from itinerant.errors import Unauthenticated
from itinerant.security.keys import KeyRing, verify_bytes
from itinerant.settings import Settings
from itinerant.wire.envelope import Headers, InRecord, OutMessage, replace_headers
from itinerant.wire.slip import APPROVAL_VISIT, Slip, Visit

SIGNER_HEADER = "ce_signer"
SIGNATURE_HEADER = "ce_signature"
CUSTOMER_HEADER = "ce_customer"
#: The principal that signs an approval gate's visit (the gate is no agent).
GATE_SIGNER = "coordinator"

_COVERED = (
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_sagaid",
    "ce_causationid",
    CUSTOMER_HEADER,
    "ce_routingslip",
    "ce_budget",
)
_MAX_SIGNATURE_HEADER = 200


def _fields(parts: Sequence[bytes]) -> bytes:
    """``parts`` length-prefixed (``<len>:<bytes>``) and concatenated: the canonical bytes."""
    return b"".join([b"%d:%s" % (len(p), p) for p in parts])


_MESSAGE_TAG = b"itinerant-message-v1"
_VISIT_TAG = b"itinerant-visit-v1"


def message_digest(header: Callable[[str], bytes | None], value: bytes, signer: str) -> bytes:
    """What a message signature covers: the covered headers, length-prefixed, and a SHA-256 of
    the value."""
    parts = [_MESSAGE_TAG, signer.encode()]
    parts += [header(name) or b"" for name in _COVERED]
    parts.append(hashlib.sha256(value).digest())
    return _fields(parts)


def visit_digest(saga_id: str, visit: Visit, previous: str | None) -> bytes:
    return _fields(
        (
            _VISIT_TAG,
            saga_id.encode(),
            visit.agent.encode(),
            visit.id.encode(),
            visit.at.isoformat().encode(),
            b"1" if visit.skipped else b"0",
            str(visit.step).encode(),
            (visit.by or "").encode(),
            (previous or "").encode(),
        )
    )


def visit_signer(visit: Visit) -> str:
    return GATE_SIGNER if visit.agent == APPROVAL_VISIT else visit.agent


def chain_previous(visits: Sequence[Visit], step: int | None) -> str | None:
    """The signature a visit of ``step`` chains to: the last visit of an earlier step. Branches
    of one parallel group all chain to the visit before the group."""
    for visit in reversed(visits):
        if step is None or visit.step is None or visit.step < step:
            return visit.sig
    return None


def _previous_of(visits: Sequence[Visit], index: int) -> str | None:
    """``chain_previous(visits[:index], visits[index].step)`` without copying the list."""
    step = visits[index].step
    for i in range(index - 1, -1, -1):
        visit = visits[i]
        if step is None or visit.step is None or visit.step < step:
            return visit.sig
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def source_principal(source: str) -> str | None:
    for prefix in ("/itinerant/", "/clients/"):
        if source.startswith(prefix):
            return source[len(prefix) :] or None
    return None


class MeshKeys:
    """Signs as the principals of this process and verifies anyone's, per the settings."""

    def __init__(self, settings: Settings) -> None:
        self.required = settings.message_signing == "required"
        self.ring = KeyRing(settings)

    # -- messages ------------------------------------------------------------------------------

    def sign(self, message: OutMessage, principal: str) -> OutMessage:
        """``message`` with ``ce_signer`` and ``ce_signature`` set for ``principal``."""
        if not self.required:
            return message
        digest = message_digest(dict(message.headers).get, message.value, principal)
        signature = self.ring.private(principal).sign(digest)
        headers: Headers = replace_headers(
            message.headers,
            [(SIGNER_HEADER, principal.encode()), (SIGNATURE_HEADER, _b64(signature).encode())],
        )
        return OutMessage(message.topic, message.key, message.value, headers)

    def is_signed(self, header: Callable[[str], bytes | None]) -> bool:
        return header(SIGNATURE_HEADER) is not None or header(SIGNER_HEADER) is not None

    def verify(self, record: InRecord | OutMessage) -> str:
        """The principal that verifiably sent ``record``; raises :class:`Unauthenticated`."""
        headers = dict(record.headers)  # one pass; the last of a repeated header wins, as ever
        signer_raw = headers.get(SIGNER_HEADER)
        source = (headers.get("ce_source") or b"").decode(errors="replace")
        if not self.required:
            claimed = signer_raw.decode(errors="replace") if signer_raw else None
            return claimed or source_principal(source) or "unverified"
        signature_raw = headers.get(SIGNATURE_HEADER)
        if signer_raw is None or signature_raw is None:
            raise Unauthenticated("the message is not signed (no ce_signer/ce_signature header)")
        signer = signer_raw.decode(errors="replace")
        if len(signature_raw) > _MAX_SIGNATURE_HEADER:
            raise Unauthenticated("the ce_signature header is too long to be a signature")
        signature = _unb64(signature_raw.decode(errors="replace"))
        key = self.ring.public(signer)
        if key is None:
            raise Unauthenticated(f"signer {signer!r} is not a principal of this mesh")
        if signature is None or not verify_bytes(
            key, message_digest(headers.get, record.value or b"", signer), signature
        ):
            raise Unauthenticated(f"the signature of {signer!r} does not match the message")
        if source_principal(source) != signer:
            raise Unauthenticated(f"signer {signer!r} may not send as source {source!r}")
        return signer

    # -- the routing slip ----------------------------------------------------------------------

    def sign_visit(self, saga_id: str, visits: Sequence[Visit], visit: Visit) -> Visit:
        """``visit`` signed by its service, chained to the visit of the step before it."""
        if not self.required:
            return visit
        previous = chain_previous(visits, visit.step)
        digest = visit_digest(saga_id, visit, previous)
        signature = self.ring.private(visit_signer(visit)).sign(digest)
        return visit.model_copy(update={"sig": _b64(signature)})

    def signed_slip(self, saga_id: str, slip: Slip) -> Slip:
        """The slip with its last visit signed (after ``Slip.advanced``)."""
        if not self.required or not slip.visited or slip.visited[-1].sig is not None:
            return slip
        *before, last = slip.visited
        signed = self.sign_visit(saga_id, before, last)
        return slip.model_copy(update={"visited": [*before, signed]})

    def verify_visits(self, saga_id: str, slip: Slip, required: Sequence[str] = ()) -> None:
        """Every visit signed by the service it names and chained; ``required`` visits present.
        Raises :class:`Unauthenticated`."""
        if not self.required:
            return
        visited = slip.visited
        for index, visit in enumerate(visited):
            signer = visit_signer(visit)
            key = self.ring.public(signer)
            signature = _unb64(visit.sig) if visit.sig else None
            previous = _previous_of(visited, index)
            if (
                key is None
                or signature is None
                or not verify_bytes(key, visit_digest(saga_id, visit, previous), signature)
            ):
                raise Unauthenticated(
                    f"the routing slip's visit {index} ({visit.agent}) is not signed by "
                    f"{signer!r} or does not chain to the visit before it"
                )
        seen = {v.agent for v in slip.visited}
        missing = [name for name in required if name not in seen]
        if missing:
            raise Unauthenticated(
                f"this step requires signed visits of {missing} in the routing slip; they are "
                "missing (a route that skipped them)"
            )


def require_signing_key(settings: Settings, principal: str) -> None:
    """Fail at start, with what to do, when ``principal`` cannot sign (rather than dead-letter
    every message it would send)."""
    if settings.message_signing == "required":
        mesh_keys(settings).ring.private(principal)


_CACHE: dict[int, tuple[Settings, MeshKeys]] = {}


def mesh_keys(settings: Settings) -> MeshKeys:
    """The keys of the mesh as this process sees them (one per settings object)."""
    cached = _CACHE.get(id(settings))
    if cached is None or cached[0] is not settings:
        if len(_CACHE) > 32:
            _CACHE.clear()
        cached = _CACHE[id(settings)] = (settings, MeshKeys(settings))
    return cached[1]
