"""Labelled items: what a data source resolves to and what feature extraction consumes."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataSourceError
from ..features.cache import array_digest, feature_key, file_digest


@dataclass
class Item:
    """One example: a file (or an in-memory array) with its label.

    `variant` names an augmentation ("" for the original); `start`/`end` select a time range of
    a video; `payload` carries features given directly (keypoint data frames).
    """

    source: Any
    label: str
    variant: str = ""
    start: float | None = None
    end: float | None = None
    payload: Any = None
    key: str = ""
    group: str = ""  # the original example this one derives from (augmentations share it)
    extra: dict = field(default_factory=dict)

    def resolve_key(self, extractor_id: str) -> Item:
        """Set `key` from the file's (or array's) content, the time range, `extractor_id` and the variant; returns self."""
        if self.payload is not None:
            digest = array_digest(self.payload)
        else:
            digest = file_digest(self.source)
        rng = "" if self.start is None and self.end is None else f"@{self.start}-{self.end}"
        self.key = feature_key(digest + rng, extractor_id, self.variant)
        if not self.group:
            self.group = f"{self.source}{rng}"
        return self

    @property
    def file(self) -> str | None:
        """The file the example comes from (None for features given as data, e.g. keypoints)."""
        return str(self.source) if self.payload is None else None

    @property
    def name(self) -> str:
        """The example as people read it: the path (or session id), with the time range of a clip."""
        base = str(self.source) if self.payload is None else str(self.extra.get("session_id", self.source))
        if self.start is not None or self.end is not None:
            base += f" [{self.start if self.start is not None else 0}s–{'' if self.end is None else self.end}s]"
        return base


def _visible(path: Path | str) -> bool:
    name = path if isinstance(path, str) else path.name
    return not name.startswith(".") and not name.startswith("__MACOSX")


def _plural(what: str) -> str:
    """'an image' -> 'images' (scans name what they look for with its article: 'not an image')."""
    for article in ("a ", "an "):
        if what.startswith(article):
            what = what[len(article):]
    return f"{what}s"


def scan_labeled_directories(root: str | os.PathLike, is_media: Callable[[Path], bool], what: str
                             ) -> tuple[dict[str, list[Path]], list[dict]]:
    """{label: files} from one subfolder per label (nested folders included), plus skipped files.

    Hidden files (.DS_Store, ._*) are ignored; other files that are not `what` are reported.
    """
    root = _existing_dir(root)
    labeled: dict[str, list[Path]] = {}
    skipped: list[dict] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        files = []
        for f in sorted(sub.rglob("*")):
            if not f.is_file() or not all(_visible(part) for part in f.relative_to(root).parts):
                continue
            if is_media(f):
                files.append(f)
            else:
                skipped.append({"path": str(f), "reason": f"not {what} (unsupported file type {f.suffix or 'none'})"})
        labeled[sub.name] = files
    loose = [f for f in root.iterdir() if f.is_file() and _visible(f) and is_media(f)]
    if not labeled:
        hint = (f" It holds {len(loose)} {_plural(what)} directly: use labeled_files for names like 'label.1.jpg',"
                " or move them into one subfolder per label.") if loose else ""
        raise DataSourceError(f"no label folders in {root}: expected one subfolder per label, each holding "
                              f"{_plural(what)}."
                              + hint)
    return labeled, skipped


def scan_labeled_files(root: str | os.PathLike, is_media: Callable[[Path], bool], what: str
                       ) -> tuple[dict[str, list[Path]], list[dict]]:
    """{label: files} where the label is the file name up to its first period."""
    root = _existing_dir(root)
    labeled: dict[str, list[Path]] = {}
    skipped: list[dict] = []
    for f in sorted(root.iterdir()):
        if not f.is_file() or not _visible(f):
            continue
        if not is_media(f):
            skipped.append({"path": str(f), "reason": f"not {what} (unsupported file type {f.suffix or 'none'})"})
            continue
        label = f.name.split(".", 1)[0]
        if not label:
            skipped.append({"path": str(f), "reason": "the file name has no label before its first period"})
            continue
        labeled.setdefault(label, []).append(f)
    if not labeled:
        raise DataSourceError(f"no {_plural(what)} in {root}: labeled_files expects files named '<label>.<anything>.<ext>'")
    return labeled, skipped


def check_labeled(labeled: dict[str, list], where: str, what: str) -> None:
    """At least two labels, each with at least one example."""
    total = sum(len(v) for v in labeled.values())
    if total == 0:
        raise DataSourceError(f"no {what}s found in {where}")
    empty = [k for k, v in labeled.items() if not v]
    if empty:
        raise DataSourceError(f"label {empty[0]!r} in {where} has no {what}s; add some or remove the folder")
    if len(labeled) < 2:
        only = next(iter(labeled))
        raise DataSourceError(f"only one label ({only!r}) in {where}: a classifier needs at least two labels")


def _existing_dir(root) -> Path:
    p = Path(root).expanduser()
    if not p.exists():
        raise DataSourceError(f"{p} does not exist")
    if not p.is_dir():
        raise DataSourceError(f"{p} is not a folder")
    return p


def files_by_label_checked(mapping: dict, is_media: Callable[[Path], bool], what: str) -> dict[str, list[Path]]:
    """`mapping` ({label: [paths]}) checked and with Path values; DataSourceError naming what is wrong."""
    if not isinstance(mapping, dict):
        raise DataSourceError(f"files_by_label expects a dict {{label: [paths]}}, got {type(mapping).__name__}")
    out: dict[str, list[Path]] = {}
    for label, paths in mapping.items():
        if isinstance(paths, (str, os.PathLike)):
            raise DataSourceError(f"files_by_label[{label!r}] must be a list of paths, not one path")
        out[str(label)] = [Path(p) for p in paths]
    return out
