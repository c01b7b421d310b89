"""itinerant/lifeline.py: a child started from the main thread gets SIGTERM when its parent
dies; off the main thread no lifeline is armed (the thread's end would kill the child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from itinerant.lifeline import die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

# A parent that starts a long sleeper with the lifeline, prints its pid, then is SIGKILLed.
PARENT = """
import subprocess, sys, time
from itinerant.lifeline import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=die_with_parent())
print(child.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] == "Z"
    except OSError:
        return True


def test_the_child_dies_with_a_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not gone(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 20
    while not gone(child):
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.05)


def test_no_lifeline_off_the_main_thread() -> None:
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(die_with_parent()))
    worker.start()
    worker.join()
    assert found == [None]
    assert die_with_parent() is not None
