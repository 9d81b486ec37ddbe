"""Saving uploaded files and zips under the data folder: whole or not at all, never outside the root.

`save_uploads` is what the data source picker's Upload button calls; it holds no widget state.
`uploaded_entries` is what the button shows afterwards: the saved files, without their bytes.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import mimetypes
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..data.items import _visible
from ._paths import PathOutsideRootError, mkdir_under_root, sanitize_filename, unique_path

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # total uncompressed bytes one upload (zip included) may write
MAX_ZIP_MEMBERS = 20_000


def save_uploads(files: Iterable[Mapping], target: Path, root: Path, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 max_zip_members: int = MAX_ZIP_MEMBERS) -> list[Path]:
    """Save uploaded files ({name, content} dicts, as FileUpload gives) in the folder `target` inside `root`.

    Names are sanitised; a .zip is unpacked (member paths sanitised; members whose folder would lie
    outside `root` are skipped). One upload may write at most `max_upload_bytes` (zips counted unpacked)
    and unpack at most `max_zip_members` files: an upload over either limit is refused before anything is
    written (ValueError). A failure part-way removes what this upload wrote. Returns the saved paths.
    """
    uploads = [(sanitize_filename(f.get("name", "upload")), bytes(f.get("content", b""))) for f in files]
    total, members = 0, 0
    for name, content in uploads:  # check the limits first: a refused upload leaves nothing behind
        if name.lower().endswith(".zip"):
            infos = _zip_files(content, name)
            members += len(infos)
            if members > max_zip_members:
                raise ValueError(f"with {name} the upload holds {members} files; at most "
                                 f"{max_zip_members} are accepted in one upload; nothing was saved")
            total += sum(m.file_size for m in infos)
        else:
            total += len(content)
        if total > max_upload_bytes:
            raise ValueError(f"with {name} the upload would write more than the limit of "
                             f"{_megabytes(max_upload_bytes)} (a zip counts unpacked); nothing was saved")
    saved: list[Path] = []
    made: list[Path] = []  # folders this upload created, removed again (when empty) if it fails
    target = _mkdir(target, root, made)
    budget = [max_upload_bytes]
    counters: dict = {}  # next free "-N" per folder and name: N same-named files cost N checks, not N²
    try:
        for name, content in uploads:
            if name.lower().endswith(".zip"):
                _unzip(content, target, root, budget, counters, saved, made)
                continue
            budget[0] -= len(content)
            dest = unique_path(target, name, counters)
            _write_new(dest, content, saved)
    except Exception as err:
        # An upload is saved whole or not at all: remove the files this upload wrote (only those:
        # each was created here with "x", so none of them is a file the user had before).
        for path in reversed(saved):
            with contextlib.suppress(OSError):
                path.unlink()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        reason = str(err)
        if isinstance(err, zipfile.BadZipFile):
            reason = f"the zip is damaged ({err})"
        raise ValueError(f"{reason}; nothing was saved") from None
    return saved


def uploaded_entries(paths: Iterable[str | os.PathLike], root: Path) -> list[dict]:
    """FileUpload value entries for files already saved (name relative to `root`, type, size, no content).

    The button's label is "Upload (N)", N the length of its value: the picker sets its value to these
    once an upload is saved, so N counts the files saved while the bytes themselves leave the state."""
    out = []
    for path in paths:
        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append({"name": relative_name(path, root), "type": mimetypes.guess_type(path.name)[0] or "",
                    "size": stat.st_size, "content": memoryview(b""),
                    "last_modified": dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC)})
    return out


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` in POSIX form (its own name when it is not under `root`)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _mkdir(folder: Path, root: Path, made: list[Path]) -> Path:
    """mkdir_under_root (never through a link leading outside root), noting the levels it creates."""
    real_root = Path(root).resolve()
    missing = [level for level in [folder, *folder.parents] if level.is_relative_to(real_root) and not level.exists()]
    try:
        return mkdir_under_root(folder, root)
    finally:
        made.extend(level for level in sorted(missing, key=lambda q: len(q.parts)) if level.is_dir())


def _unzip(content: bytes, target: Path, root: Path, budget: list[int], counters: dict, saved: list[Path],
           made: list[Path]) -> None:
    folders: dict[Path, Path | None] = {}
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        for m in zf.infolist():
            if m.is_dir():
                continue
            parts = [p for p in m.filename.replace("\\", "/").split("/") if p not in ("", ".", "..")]
            if not parts or not all(_visible(p) for p in parts):
                continue
            safe = [sanitize_filename(p) for p in parts]
            if m.file_size > budget[0]:
                raise ValueError("the zip unpacks to more than the upload limit")
            budget[0] -= m.file_size
            wanted = target.joinpath(*safe[:-1])
            if wanted not in folders:  # each folder checked and made once per zip, not per member
                try:
                    folders[wanted] = _mkdir(wanted, root, made)
                except (PathOutsideRootError, FileExistsError, NotADirectoryError):
                    folders[wanted] = None
            folder = folders[wanted]
            if folder is None:
                log.info("zip member %r skipped: its folder would be outside the data folder", m.filename)
                continue
            with zf.open(m) as src:  # read (and CRC-checked) before any file is created for it
                data = src.read(m.file_size + 1)[: m.file_size]  # never more than the header says
            _write_new(unique_path(folder, safe[-1], counters), data, saved)
def _write_new(dest: Path, content: bytes, saved: list[Path]) -> None:
    """Create `dest` ("x": never through a link that appeared meanwhile) holding `content`; it is listed
    in `saved` as soon as it exists, so a failed write is removed with the rest of the upload."""
    with open(dest, "xb") as out:
        saved.append(dest)
        out.write(content)


def _zip_files(content: bytes, name: str) -> list[zipfile.ZipInfo]:
    """The files (not folders) a zip upload holds; ValueError for something that is not a zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            return [m for m in zf.infolist() if not m.is_dir()]
    except zipfile.BadZipFile as err:
        raise ValueError(f"{name} is not a zip file that can be read ({err})") from None


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


