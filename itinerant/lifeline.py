"""Child processes that die with the process that started them (docs/operations.md#supervision).

``itinerant up`` starts the broker and every service; if it is SIGKILLed it cannot stop them, so
each is started with Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``): the
kernel sends it SIGTERM when its parent goes, and it stops as if ``itinerant down`` had asked.
Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_PRCTL = _prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that makes the child get SIGTERM when this
    process dies; None where the platform has no such signal, and when called off the main
    thread: the kernel sends the signal when the *thread* that started the child ends, which for
    another thread (a pool's) would stop the child while this process still runs."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec: no locks, no allocation storms
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
