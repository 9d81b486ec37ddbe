"""Keeping a dashboard inside its root folder: path containment and safe upload names.

A dashboard may be served to other people, so every path a user types, clicks or uploads is
resolved (symlinks followed) and must stay inside the root the widget was given.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from .. import samples
from ..data.roots import NAME_MAX, PathOutsideRootError, is_within, resolve_under_root  # noqa: F401 - re-exported

DATA_ROOT_ENV = "CREATEML_WIDGETS_DATA_ROOT"


def default_data_root() -> Path:
    """The data root widgets use when given none: the folder `CREATEML_WIDGETS_DATA_ROOT` names
    (`~` expanded), else the bundled samples. Uploads go below it (`uploads/`), so a dashboard
    served from an installed package can keep them out of the package by setting the variable."""
    value = os.environ.get(DATA_ROOT_ENV, "").strip()
    if not value:
        return Path(samples.ROOT).resolve()
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{DATA_ROOT_ENV}={value!r} is not a folder; set it to the folder that holds "
                                 "your training data, or unset it to use the bundled samples")
    return root


def mkdir_under_root(path: Path, root: Path) -> Path:
    """Create folder `path` (and missing parents) inside `root`, one level at a time, refusing any
    level that is, or would become, outside `root` (e.g. an existing link to a folder elsewhere).

    `Path.mkdir(parents=True)` would follow such a link and create folders outside the root.
    """
    root = Path(root).resolve()
    path = Path(path)
    if not path.is_absolute():
        path = root / path
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise PathOutsideRootError(str(path), root) from None
    current = root
    for part in rel.parts:
        if part in ("", ".", ".."):
            raise PathOutsideRootError(rel.as_posix(), root, "'..' is not allowed")
        current = current / part
        if not is_within(current, root):
            raise PathOutsideRootError(rel.as_posix(), root, "it leads outside the data folder (a link pointing elsewhere)")
        if not current.is_dir():
            current.mkdir()  # FileExistsError if a file (or a dangling link) holds the name
        if not is_within(current, root):  # swapped for a link meanwhile
            raise PathOutsideRootError(rel.as_posix(), root, "it leads outside the data folder (a link pointing elsewhere)")
    return current.resolve()


def hide_root(text: str, root: str | os.PathLike | None) -> str:
    """`text` with the absolute path of `root` left out, for what a dashboard shows (it may be served to
    others, who need not learn where the data lies on the server): `/srv/data/digits/1.jpg` reads
    `digits/1.jpg`, the root itself `./`. The root is matched as given and as its real path."""
    if not text or root is None:
        return text
    given = Path(os.fspath(root)).expanduser()
    prefixes = set()
    for variant in (given, given.resolve()):
        if variant.is_absolute() and variant.parent != variant:  # never "/" itself: every path starts so
            prefixes.add(str(variant).rstrip("/\\"))
    for prefix in sorted(prefixes, key=len, reverse=True):
        pattern = re.compile(r"(?<![\w.\-/\\])" + re.escape(prefix)
                             + r"(?:(?P<inside>[/\\]+)(?=[^\s'\"`,;:)\]}>])|[/\\]*(?![\w\-]|\.\w))")
        text = pattern.sub(lambda m: "" if m.group("inside") else "./", text)
    return text


def relative_to_root(path: Path, root: Path) -> str:
    """`path` as a POSIX path relative to `root` ("" for the root itself)."""
    rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    return "" if rel == "." else rel


_UNSAFE = re.compile(r"[^\w.\- ()+,@]+", re.UNICODE)


def sanitize_filename(name: str, fallback: str = "upload") -> str:
    """A harmless single file name from what a browser sent: no folders, no control characters,
    no leading dots, at most 120 characters; unicode letters are kept (NFC-normalised)."""
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    if name in ("", ".", ".."):
        name = fallback
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 120 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else name[:120]
    return name


def unique_path(folder: Path, name: str, counters: dict | None = None) -> Path:
    """`folder/name`, or `folder/stem-1.ext`, `-2` … if taken.

    `counters`: a dict kept by the caller across calls (one upload): the search for a free name starts
    after the last number handed out for that folder and name, so N files of one name cost N checks,
    not N²/2.
    """
    target = folder / name
    key = (str(folder), name)
    if (counters is None or key not in counters) and not target.exists() and not target.is_symlink():
        if counters is not None:
            counters[key] = 0
        return target
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    start = (counters or {}).get(key, 0) + 1
    for i in range(start, start + 100_000):
        candidate = folder / (f"{stem}-{i}.{ext}" if ext else f"{stem}-{i}")
        if not candidate.exists() and not candidate.is_symlink():
            if counters is not None:
                counters[key] = i
            return candidate
    raise FileExistsError(f"too many files named {name!r} in {folder}")
