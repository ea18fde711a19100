"""Atomic file writes: a temp file beside the target, renamed onto it only once complete.

Temp files and folders are named `.tmp-*`. A process killed mid-write (SIGKILL runs no cleanup)
leaves one behind; the next write into the same folder removes those old enough to belong to no
live write."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STALE_SECONDS = 6 * 3600  # a temp this old belongs to no live write (writes take seconds)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but is another user's
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, max_age: float = STALE_SECONDS) -> list[Path]:
    """Delete `.tmp-*` files and folders in `folder` older than `max_age` seconds: what a killed
    write left behind. Younger ones may belong to a write in progress and stay, and so do those
    whose name carries the pid of a live process (`-pid<N>-`: a long notebook's staging folder)."""
    removed = []
    now = time.time()
    for tmp in Path(folder).glob(".tmp-*"):
        try:
            if now - tmp.lstat().st_mtime < max_age:
                continue
            pid = re.search(r"-pid(\d+)-", tmp.name)
            if pid and _alive(int(pid.group(1))):
                continue
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
            removed.append(tmp)
        except OSError:  # another process removed it first, or it is not ours to remove
            continue
    return removed


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Open a temp file in `path`'s folder; on success rename it to `path` (mode 0644), on any
    error delete it, so readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
