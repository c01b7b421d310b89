"""``itinerant kcat`` links the wheel's librdkafka from a folder private to the user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from itinerant.cli.kcat import UnsafeLibraryFolder, kcat_env, private_lib_dir, wheel_librdkafka


def test_the_link_lives_in_a_private_folder_of_the_user(tmp_path: Path) -> None:
    if wheel_librdkafka() is None:
        pytest.skip("this confluent-kafka wheel ships no librdkafka")
    env = kcat_env({"XDG_CACHE_HOME": str(tmp_path), "LD_LIBRARY_PATH": "/opt/x"})
    folder = tmp_path / "itinerant" / "kcat-lib"
    assert env["LD_LIBRARY_PATH"] == f"{folder}{os.pathsep}/opt/x"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    link = folder / "librdkafka.so.1"
    assert link.is_symlink() and link.resolve() == wheel_librdkafka().resolve()  # type: ignore[union-attr]


def test_a_planted_file_in_place_of_the_link_is_replaced(tmp_path: Path) -> None:
    if wheel_librdkafka() is None:
        pytest.skip("this confluent-kafka wheel ships no librdkafka")
    folder = private_lib_dir({"XDG_CACHE_HOME": str(tmp_path)})
    (folder / "librdkafka.so.1").write_bytes(b"not the library")
    kcat_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert (folder / "librdkafka.so.1").is_symlink()


def test_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "itinerant" / "kcat-lib"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    with pytest.raises(UnsafeLibraryFolder, match="XDG_CACHE_HOME"):
        private_lib_dir({"XDG_CACHE_HOME": str(tmp_path)})


def test_a_link_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "itinerant").mkdir()
    (tmp_path / "itinerant" / "kcat-lib").symlink_to(elsewhere)
    with pytest.raises(UnsafeLibraryFolder):
        private_lib_dir({"XDG_CACHE_HOME": str(tmp_path)})
