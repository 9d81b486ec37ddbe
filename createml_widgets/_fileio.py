"""Writing files so that a kill at any instant leaves either the old file or the new one.

Every file the package writes for the user or for itself (session files, checkpoints, the feature
cache, the cached ONNX backbone, Core ML and ONNX models) goes through here: the new content is
written under a temporary name beside the target (`.<name>.<8 letters or digits>`, in the same
folder, so the rename never crosses a file system) and then renamed over it.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "move_into_place", "remove_quietly", "temp_sibling"]


def temp_sibling(path: Path, tag: str = "") -> Path:
    """A fresh temporary name beside `path`: `.<name>.<token>`, or `.<stem>.<token>.<tag><suffix>` with a tag
    (the suffix kept last, for writers that choose the format by it, like coremltools' `save`)."""
    token = secrets.token_hex(4)
    if tag:
        return path.with_name(f".{path.stem}.{token}.{tag}{path.suffix}")
    return path.with_name(f".{path.name}.{token}")


def remove_quietly(path: Path) -> None:
    """Remove a file or a folder (a package) if it is there; an error removing it is ignored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None], *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically; returns `path`.

    `data` is the bytes, or a function that writes them into the open binary file it is given. The
    folder is created when missing. With `durable` the bytes are flushed to the disk (fsync) before
    the rename, so a power cut cannot leave an empty file under the name either (caches pass False:
    a lost entry is only recomputed). On any error the temporary file is removed and the error
    raised; `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return path


def move_into_place(temp: Path, path: Path) -> Path:
    """Rename the finished `temp` (a file, or a folder such as an .mlpackage) to `path`, replacing it.

    A folder cannot be renamed over another one: the old one is moved aside first, put back if the new
    one cannot be moved in, and removed once it is. On an error `temp` is removed and the error raised.
    """
    try:
        if not temp.is_dir() or not (path.exists() or path.is_symlink()):
            os.replace(temp, path)
        else:
            backup = temp_sibling(path, "old")
            os.replace(path, backup)
            try:
                os.replace(temp, path)
            except OSError:
                os.replace(backup, path)
                raise
            remove_quietly(backup)
    except OSError:
        remove_quietly(temp)
        raise
    return path
