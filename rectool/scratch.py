"""Private scratch folders named by their owner's process id: made for one run, swept by a later run
once their owner has died (a killed run cannot clean up after itself).

Inputs: a parent folder and a prefix; output: a fresh folder ``PREFIX-PID-XXXXXXXX`` in the parent.

    work = scratch_dir(Path("out"), ".tune.tune")   # also removes .tune.tune-<dead pid>-* folders
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def sweep_dead(parent: Path, prefix: str) -> None:
    """Remove the ``PREFIX-PID-*`` folders in ``parent`` whose process is gone."""
    for folder in parent.glob(f"{prefix}-*-*"):
        pid = folder.name[len(prefix) + 1:].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A new ``PREFIX-PID-XXXXXXXX`` folder in ``parent``, after sweeping those of dead processes."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_dead(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=parent))
