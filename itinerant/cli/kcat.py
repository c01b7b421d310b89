"""``itinerant kcat``: Debian's kcat with a librdkafka new enough for the embedded broker.

kcat 1.7 from Debian links librdkafka 2.0.2, whose ApiVersions request Tansu 0.6 does not answer
("ApiVersionRequest failed: Local: Read underflow"). The confluent-kafka wheel ships librdkafka
2.16, ABI-compatible, so kcat runs against it with ``LD_LIBRARY_PATH`` pointing at a link to it.

The link lives in a private folder of the user's (``$XDG_CACHE_HOME/itinerant/kcat-lib``, mode
0700), never in a shared temporary folder where another user could plant a library of their own
(docs/security.md#operator-output).

The broker security settings (docs/security.md#the-broker) go to kcat as a librdkafka
properties file (``-F``), written 0600 and removed when kcat exits, so the SASL password is
never on a command line.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import confluent_kafka

from itinerant.brokers.client_security import kcat_properties
from itinerant.errors import NonRetryableError
from itinerant.settings import Settings


class UnsafeLibraryFolder(NonRetryableError):
    """The folder for kcat's library link is not private to this user."""

    reason = "unsafe_folder"


def wheel_librdkafka() -> Path | None:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    return found[0] if found else None


def private_lib_dir(env: dict[str, str]) -> Path:
    """The user's own folder for the library link: created 0700, and refused when it is not
    the user's or others may write to it."""
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    folder = Path(cache) / "itinerant" / "kcat-lib"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise UnsafeLibraryFolder(
            f"{folder} is not a private folder of this user (a link, someone else's, or "
            f"writable by others): remove it, or set XDG_CACHE_HOME to a folder of your own"
        )
    return folder


def kcat_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    lib = wheel_librdkafka()
    if lib is None:
        return env
    folder = private_lib_dir(env)
    link = folder / "librdkafka.so.1"
    if not link.is_symlink() or link.resolve() != lib.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(lib)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def kcat_path() -> str | None:
    return shutil.which("kcat")


@contextmanager
def kcat_config_file(settings: Settings) -> Iterator[Path]:
    """A 0600 librdkafka properties file with ``settings``' security, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="itinerant-kcat-", suffix=".properties")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for key, value in kcat_properties(settings).items():
                out.write(f"{key}={value}\n")
        yield path
    finally:
        path.unlink(missing_ok=True)


def kcat_args(settings: Settings, args: list[str], config_file: Path) -> list[str]:
    """``args`` with the bootstrap servers (unless ``-b`` is given) and the security properties
    file (unless ``-F`` is given)."""
    out = list(args)
    if "-F" not in out:
        out = ["-F", str(config_file), *out]
    if "-b" not in out:
        out = ["-b", settings.kafka_bootstrap_servers, *out]
    return out


def run_kcat(binary: str, settings: Settings, args: list[str]) -> int:
    """Run kcat (stdin, stdout and stderr are ours) and return its exit code."""
    with kcat_config_file(settings) as config_file:
        command = [binary, *kcat_args(settings, args, config_file)]
        child = subprocess.Popen(command, env=kcat_env())
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C reached kcat too: let it finish and say so
                continue
