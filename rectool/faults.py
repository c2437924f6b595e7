"""Deterministic fault injection: the crash tests stop a command at a named point, not on a timer.

``RECTOOL_FAULT=POINT[:N[:ACTION]]`` acts the N-th time (default 1) the process passes
``fault_point(POINT)``; ACTION is ``kill`` (SIGKILL itself, the default: a crash nothing can
clean up after) or ``stop`` (SIGSTOP itself until the test sends SIGCONT: a writer paused
at a chosen instant, for races). ``RECTOOL_FAULT_RANK=R`` limits it to the distributed
worker of that rank. Unset, a fault point costs one environment look-up.

Points in the code (grep ``fault_point(``): ``artifacts.before_commit``,
``artifacts.after_exchange``, ``artifacts.mid_overwrite``, ``convert.batch``,
``features.cutoff``, ``train.step``, ``checkpoint.before_rename``.

Example::

    RECTOOL_FAULT=train.step:30 rectool train -c x.yaml   # killed -9 at step 30
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("RECTOOL_FAULT")
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    rank = os.environ.get("RECTOOL_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    count, _, action = rest.partition(":")
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != int(count or 1):
        return
    os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
