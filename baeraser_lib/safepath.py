"""Names that become file or folder names (grid names, run ids, report names, suffixes) can never
leave the folder they are meant for: no separators, no `.` or `..`, no leading dot, no absolute
paths. One check, used wherever a user's text turns into a path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name, what: str = "name") -> str:
    """`name` if it is a plain file name (letters, digits, '_', '.', '-'; not starting with '.'
    or '-'); ConfigError otherwise, saying why."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 200:
        raise ConfigError(f"{what} {name!r} must be a plain file name: letters, digits, '_', '.' or '-', "
                          f"at most 200 characters, not starting with '.' or '-' (so it cannot name '.', '..', "
                          f"a hidden file or a path)")
    return name


def child(parent: str | os.PathLike, name: str, what: str = "name") -> Path:
    """`parent / name` once `check_name` passes: a name with no separator and no leading dot is
    one entry of `parent`, whatever `parent` is."""
    return Path(parent) / check_name(name, what)
