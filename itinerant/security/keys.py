"""The mesh's Ed25519 keys (docs/security.md#keys): each principal's private key, and the public
keys every receiver checks signatures against.

Private keys come from ``ITINERANT_SIGNING_KEYS`` (base64 seeds, the way to give a deployed
service only its own key) or from ``<keys_dir>/private/<principal>.key``; public keys from
``ITINERANT_TRUSTED_KEYS`` and ``<keys_dir>/public.json``. For a local mesh `itinerant up`
generates the files (directory 0700, files 0600) and keeps them across restarts, so a message
signed before a restart still verifies after it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from itinerant.errors import NonRetryableError
from itinerant.settings import Settings

PRINCIPAL = re.compile(r"^[a-z0-9_.-]{1,64}$")
PUBLIC_FILE = "public.json"


class SigningKeyMissing(NonRetryableError):
    """A key is missing or unreadable: a configuration error, not a message's fault."""

    reason = "signing_key_missing"
    hint = (
        "run `itinerant up` once to generate a local mesh's keys, or set ITINERANT_SIGNING_KEYS "
        "and ITINERANT_TRUSTED_KEYS (docs/security.md#keys)"
    )


def keys_dir(settings: Settings) -> Path:
    return settings.keys_dir or settings.data_dir / "keys"


def _seed(text: str, where: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyMissing(f"the signing key of {where} is not base64") from exc
    if len(raw) != 32:
        raise SigningKeyMissing(
            f"the signing key of {where} is {len(raw)} bytes, not a 32-byte seed"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def _public(text: str, where: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyMissing(f"the public key of {where} is not a base64 Ed25519 key") from exc


def public_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def seed_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def ensure_local_keys(folder: Path, principals: Iterable[str]) -> list[str]:
    """Generate the missing keys of ``principals`` under ``folder``; returns the new ones.
    Existing keys are kept: a restart must not invalidate messages not yet consumed."""
    private = folder / "private"
    private.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    private.chmod(0o700)
    public_path = folder / PUBLIC_FILE
    published: dict[str, str] = json.loads(public_path.read_text()) if public_path.exists() else {}
    created: list[str] = []
    for principal in principals:
        if not PRINCIPAL.match(principal):
            raise SigningKeyMissing(f"principal name {principal!r} must match {PRINCIPAL.pattern}")
        path = private / f"{principal}.key"
        if path.exists():
            key = _seed(path.read_text(), str(path.name))
        else:
            key = Ed25519PrivateKey.generate()
            _write_private(path, seed_text(key))
            created.append(principal)
        published[principal] = public_text(key)
    tmp = public_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(published, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(public_path)
    return created


class KeyRing:
    """Private keys this process may sign with, public keys of the whole mesh. Files are read
    lazily and re-read when they change, so a principal added by a later `up` is known.

    Loaded keys are kept: the public keys' file is looked at (one ``stat``) at most once every
    :attr:`RECHECK_S` seconds, or at once for a principal not known yet, and re-read only when it
    changed (its mtime, size or inode); :meth:`reload` forces a re-read. A key is the same key
    however often it is looked up, so caching it changes no verification's outcome
    (docs/security.md#keys)."""

    #: At most this often (seconds) a lookup checks whether ``public.json`` changed.
    RECHECK_S = 1.0

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = keys_dir(settings)
        self._public_path = self.folder / PUBLIC_FILE
        self._private_dir = self.folder / "private"
        self._clock = clock
        self._configured_private = {
            name: _seed(value.get_secret_value(), f"principal {name!r}")
            for name, value in settings.signing_keys.items()
        }
        self._configured_public = {
            name: _public(value, f"principal {name!r}")
            for name, value in settings.trusted_keys.items()
        }
        self._private: dict[str, Ed25519PrivateKey] = {}
        # Replaced whole on a reload (never changed in place), so lookups need no lock.
        self._public: dict[str, Ed25519PublicKey] = {}
        self._public_stamp: tuple[int, int, int] | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def private(self, principal: str) -> Ed25519PrivateKey:
        key = self._configured_private.get(principal) or self._private.get(principal)
        if key is not None:
            return key
        with self._lock:
            key = self._private.get(principal)
            if key is None:
                path = self._private_dir / f"{principal}.key"
                try:
                    text = path.read_text()
                except OSError as exc:
                    raise SigningKeyMissing(
                        f"no signing key for principal {principal!r} (not in "
                        f"ITINERANT_SIGNING_KEYS, and {path.name} is not in the keys folder)"
                    ) from exc
                key = self._private[principal] = _seed(text, path.name)
            return key

    def public(self, principal: str) -> Ed25519PublicKey | None:
        key = self._configured_public.get(principal)
        if key is not None:
            return key
        key = self._public.get(principal)
        checked = self._checked_at
        if key is None or checked is None or self._clock() - checked >= self.RECHECK_S:
            with self._lock:
                self._refresh_public()
            key = self._public.get(principal)
        return key

    def principals(self) -> list[str]:
        with self._lock:
            self._refresh_public()
            return sorted({*self._public, *self._configured_public})

    def reload(self) -> None:
        """Forget the loaded keys: the next lookups read the files again."""
        with self._lock:
            self._private = {}
            self._public_stamp = None
            self._refresh_public()

    def _refresh_public(self) -> None:
        self._checked_at = self._clock()
        path = self._public_path
        try:
            st = path.stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._public_stamp:
            return
        try:
            published = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SigningKeyMissing(f"{path.name} in the keys folder is not readable JSON") from exc
        self._public = {name: _public(text, name) for name, text in published.items()}
        self._public_stamp = stamp


def verify_bytes(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
