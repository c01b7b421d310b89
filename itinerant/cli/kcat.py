"""``itinerant kcat``: Debian's kcat with a librdkafka new enough for the embedded broker.

kcat 1.7 from Debian links librdkafka 2.0.2, whose ApiVersions request Tansu 0.6 does not answer
("ApiVersionRequest failed: Local: Read underflow"). The confluent-kafka wheel ships librdkafka
2.16, ABI-compatible, so kcat runs against it with ``LD_LIBRARY_PATH`` pointing at a link to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import confluent_kafka


def wheel_librdkafka() -> Path | None:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    return found[0] if found else None


def kcat_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    lib = wheel_librdkafka()
    if lib is None:
        return env
    folder = Path(tempfile.gettempdir()) / f"itinerant-librdkafka-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    link = folder / "librdkafka.so.1"
    if not link.exists() or link.resolve() != lib.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(lib)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def kcat_path() -> str | None:
    return shutil.which("kcat")
