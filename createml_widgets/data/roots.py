"""Keeping what a user names inside one root folder: the real path of a name, and whether a path is inside.

A dashboard may be served to other people, so every path a user types, clicks or uploads is resolved
(symlinks followed) and must stay inside the root it was given. The widgets (`widgets/_paths.py`) and the
folder analysis (`data/folders.py`) share these.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["NAME_MAX", "PathOutsideRootError", "is_within", "resolve_under_root"]

NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS, Windows)


class PathOutsideRootError(PermissionError):
    """A path a user asked for is not inside the dashboard's root folder."""

    def __init__(self, requested: str | os.PathLike, root: Path, reason: str = "it is outside the data folder"):
        self.requested, self.root = requested, root
        super().__init__(f"cannot open {str(requested)!r}: {reason}")


def resolve_under_root(root: Path, relative: str | os.PathLike = "") -> Path:
    """The real path of `relative` inside `root`; raises PathOutsideRootError for anything else.

    Refused: absolute paths (POSIX or Windows, drive letters included), any `..` component, NUL
    bytes, and anything whose real path (symlinks resolved) is not `root` or below it.
    """
    root = Path(root).resolve()
    text = os.fspath(relative)
    if "\x00" in text:
        raise PathOutsideRootError(text, root, "the name contains a NUL character")
    text = text.replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise PathOutsideRootError(text, root, "absolute paths are not allowed; give a path inside the data folder")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise PathOutsideRootError(text, root, "'..' is not allowed")
    long = next((p for p in parts if len(os.fsencode(p)) > NAME_MAX), None)
    if long is not None:  # the OS would answer ENAMETOOLONG from is_dir(), exists(), open() ...
        shown = text if len(text) <= 60 else text[:40] + "…"
        raise PathOutsideRootError(shown, root, f"a name in it is {len(os.fsencode(long))} bytes long; file and "
                                   f"folder names can be at most {NAME_MAX} bytes")
    try:
        candidate = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python 3.11)
        raise PathOutsideRootError(text, root, "it is a link that loops back on itself") from None
    if not is_within(candidate, root):
        raise PathOutsideRootError(text, root, "it leads outside the data folder (a link pointing elsewhere)")
    return candidate


def is_within(path: Path, root: Path) -> bool:
    """Whether the real path of `path` is `root` or inside it (`root` must be resolved)."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return real == root or real.is_relative_to(root)
