"""Committing an output: the renames behind ``rectool.artifacts.atomic_dir`` / ``atomic_file``.

``commit(tmp, final, overwrite)`` moves a finished temp sibling to its final path. The rename
never replaces what the user did not ask to replace (``renameat2(RENAME_NOREPLACE)``), and
``--overwrite`` swaps old and new in one step (``RENAME_EXCHANGE``): a reader finds the complete
old output or the complete new one at every instant. Where the C library or the filesystem
cannot (``_RENAMEAT2`` is None, or the flag is refused), the fallbacks: a directory is renamed
after a check that the target is absent, a file is linked (``link(2)`` never replaces), and an
overwrite first renames the old output to ``.NAME.old-PID-*``. A crash between those two renames
is repaired by the next writer, in ``sweep_leftovers``: it restores that backup, never deletes it,
and removes unfinished temps (``.NAME.tmp-*``).

Callers hold the output's lock (``rectool.artifacts.output_lock``) around all of it, so no
live rectool process owns what ``sweep_leftovers`` touches. Fault points (``rectool.faults``):
``artifacts.before_commit``, ``artifacts.after_exchange``, ``artifacts.mid_overwrite``.

Example::

    tmp = final.parent / f".{final.name}.tmp-123"
    ...                                  # write into tmp
    commit(tmp, final, overwrite=True)   # final is the new output, the old one is gone
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from rectool import console
from rectool.errors import UserError
from rectool.faults import fault_point

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _libc_renameat2():  # noqa: ANN202
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2, ctypes.get_errno
    except (OSError, AttributeError):  # not glibc >= 2.28: the portable fallbacks below
        return None


_RENAMEAT2 = _libc_renameat2()


class _Unsupported(Exception):
    """renameat2 or its flag is not available on this system or filesystem."""


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    if _RENAMEAT2 is None:
        raise _Unsupported
    call, get_errno = _RENAMEAT2
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return
    err = get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise _Unsupported
    raise OSError(err, os.strerror(err), os.fspath(dst))


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename, failing with FileExistsError if ``dst`` exists (atomically where the OS can)."""
    try:
        _renameat2(src, dst, _RENAME_NOREPLACE)
        return
    except _Unsupported:
        pass
    if src.is_dir():  # rename(2) refuses a non-empty directory target; check for the rest
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", os.fspath(dst))
        os.rename(src, dst)
    else:  # link(2) never replaces
        os.link(src, dst)
        os.unlink(src)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def commit(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``final``; replace an existing ``final`` only with ``overwrite``."""
    fault_point("artifacts.before_commit")
    if overwrite and os.path.lexists(final):
        try:
            _renameat2(tmp, final, _RENAME_EXCHANGE)
        except _Unsupported:
            _replace_with_backup(tmp, final)
            return
        except FileNotFoundError:  # removed meanwhile: nothing left to exchange with
            pass
        else:
            fault_point("artifacts.after_exchange")
            remove(tmp)  # the old output, now under the temp name
            return
    try:
        _rename_noreplace(tmp, final)
    except FileExistsError:
        remove(tmp)
        raise UserError(f"output {final}: another process created it while this run was writing; nothing was "
                        "replaced — pass --overwrite to replace it or choose another path") from None


def _replace_with_backup(tmp: Path, final: Path) -> None:
    if not tmp.is_dir():  # a file replaces a file in one rename(2)
        os.replace(tmp, final)
        return
    backup = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.rename(final, backup)
    fault_point("artifacts.mid_overwrite")
    os.rename(tmp, final)
    remove(backup)


def sweep_leftovers(final: Path) -> None:
    """Repair what a killed writer of ``final`` left. Runs under the output's lock, so no live
    rectool process owns these: unfinished temps go; a backup whose output is missing comes back."""
    for backup in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not os.path.lexists(final):
            os.rename(backup, final)
            console.log(f"restored {final} from {backup.name}, left by an --overwrite that was killed")
        else:
            remove(backup)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        remove(stale)
