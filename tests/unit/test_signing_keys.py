"""The mesh's keys as a process keeps them, and what signatures cover
(docs/security.md#keys, docs/security.md#messages)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from itinerant.errors import Unauthenticated
from itinerant.security.keys import PUBLIC_FILE, KeyRing, ensure_local_keys, keys_dir, public_text
from itinerant.security.signing import (
    MeshKeys,
    _previous_of,
    chain_previous,
    message_digest,
    visit_digest,
)
from itinerant.settings import Settings
from itinerant.wire.slip import Slip, Step, Visit

AT = datetime(2027, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _publish(folder: Path, keys: dict[str, Ed25519PrivateKey]) -> None:
    published = {name: public_text(key) for name, key in keys.items()}
    tmp = folder / "public.tmp"
    tmp.write_text(json.dumps(published))
    tmp.replace(folder / PUBLIC_FILE)


@pytest.fixture
def signing(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, metrics_port_base=0)
    ensure_local_keys(keys_dir(settings), ["alpha", "beta"])
    return settings


def test_the_canonical_bytes_of_messages_and_visits_are_unchanged() -> None:
    # Signatures made by another version of the mesh must keep verifying: these digests are
    # part of the wire contract.
    headers = {
        "ce_id": b"m-1",
        "ce_type": b"itinerant.a.run.v1",
        "ce_source": b"/itinerant/b",
        "ce_sagaid": b"s-1",
        "ce_routingslip": b'{"steps":[]}',
    }
    digest = message_digest(headers.get, b'{"x":1}', "b")
    assert digest.startswith(b"20:itinerant-message-v11:b3:m-1")
    assert (
        hashlib.sha256(digest).hexdigest()
        == "26777d43b34ed66f70b83341219bb7e516cf6cfc6c9a097615a041448358ffc2"
    )
    visit = Visit(agent="a", id="m-1", at=AT, step=2)
    assert (
        hashlib.sha256(visit_digest("s-1", visit, "prevsig")).hexdigest()
        == "f9c0ec4cd0dcc7e4b455fc018a885a438d16792f296f76b54b1f54e9ef5e7b3f"
    )
    gate = Visit(
        agent="approval", id="m-2", at=datetime(2027, 1, 1, tzinfo=UTC), skipped=True, by="op"
    )
    assert visit_digest("s-1", gate, None).endswith(b"4:None2:op0:")


def test_a_loaded_public_key_is_kept_until_the_file_is_checked_again(signing: Settings) -> None:
    clock = Clock()
    ring = KeyRing(signing, clock=clock)
    first = ring.public("alpha")
    assert first is not None
    rotated = Ed25519PrivateKey.generate()
    _publish(keys_dir(signing), {"alpha": rotated, "beta": Ed25519PrivateKey.generate()})
    clock.now += KeyRing.RECHECK_S / 2
    assert ring.public("alpha") is first  # within the window: no look at the file
    clock.now += KeyRing.RECHECK_S
    seen = ring.public("alpha")
    assert seen is not None and _raw(seen) == _raw(rotated.public_key())


def test_a_principal_added_later_is_known_at_once(signing: Settings) -> None:
    ring = KeyRing(signing, clock=Clock())
    assert ring.public("alpha") is not None
    assert ring.public("gamma") is None
    ensure_local_keys(keys_dir(signing), ["gamma"])
    assert ring.public("gamma") is not None  # an unknown name checks the file at once


def test_a_removed_principal_is_forgotten_after_the_window_or_a_reload(
    signing: Settings,
) -> None:
    clock = Clock()
    ring = KeyRing(signing, clock=clock)
    assert ring.public("beta") is not None
    _publish(keys_dir(signing), {"alpha": Ed25519PrivateKey.generate()})
    ring.reload()
    assert ring.public("beta") is None
    _publish(keys_dir(signing), {})
    assert ring.public("alpha") is not None
    clock.now += KeyRing.RECHECK_S
    assert ring.public("alpha") is None


def _chain(keys: MeshKeys, slip: Slip, agents: list[str]) -> Slip:
    for agent in agents:
        slip = keys.signed_slip("saga-1", slip.advanced(agent, f"m-{agent}", AT))
    return slip


def test_a_chain_of_visits_verifies_and_a_tampered_one_does_not(signing: Settings) -> None:
    keys = MeshKeys(signing)
    names = ["alpha", "beta"] * 4
    slip = _chain(keys, Slip(steps=[Step(agent=a) for a in [*names, "alpha"]]), names)
    keys.verify_visits("saga-1", slip, ["alpha", "beta"])
    with pytest.raises(Unauthenticated, match="visit"):
        keys.verify_visits("saga-2", slip)  # the visits of another saga
    visits = list(slip.visited)
    visits[3], visits[5] = visits[5], visits[3]  # same signers, out of order
    with pytest.raises(Unauthenticated, match="visit 3"):
        keys.verify_visits("saga-1", slip.model_copy(update={"visited": visits}))
    forged = [*slip.visited[:-1], slip.visited[-1].model_copy(update={"id": "m-other"})]
    with pytest.raises(Unauthenticated, match="visit 7"):
        keys.verify_visits("saga-1", slip.model_copy(update={"visited": forged}))
    with pytest.raises(Unauthenticated, match="requires"):
        keys.verify_visits("saga-1", slip, ["gamma"])


def test_branches_of_a_group_chain_to_the_visit_before_the_group() -> None:
    # visits of steps 0, 1 (a group of two branches), 2, and one without a step
    visits = [
        Visit(agent="alpha", id="m0", at=AT, step=0, sig="s0"),
        Visit(agent="alpha", id="m1", at=AT, step=1, sig="s1a"),
        Visit(agent="beta", id="m2", at=AT, step=1, sig="s1b"),
        Visit(agent="alpha", id="m3", at=AT, step=2, sig="s2"),
        Visit(agent="beta", id="m4", at=AT, step=None, sig="sx"),
    ]
    for index in range(len(visits)):
        assert _previous_of(visits, index) == chain_previous(visits[:index], visits[index].step)
    assert _previous_of(visits, 2) == "s0"
