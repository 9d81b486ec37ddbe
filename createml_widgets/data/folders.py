"""What a folder holds as training data: its layout, labels, counts and the problems to fix first.

The data source picker shows this analysis; it is plain library code (no widget), so a script can run it
too. A folder is read in one of the layouts the DataSources accept: one subfolder per label, files named
`label.N.ext`, or an annotation table (CSV/JSON) naming files and labels. Nothing outside `root` is
read: links leading elsewhere are reported, never followed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .items import _visible
from .roots import PathOutsideRootError, is_within, resolve_under_root

if TYPE_CHECKING:
    import pandas as pd

ANNOTATION_SUFFIXES = (".csv", ".json")
FILE_COLUMN_NAMES = ("image", "video", "file", "filename", "file_name", "path", "filepath", "image_path",
                     "video_path", "name")
LABEL_COLUMN_NAMES = ("label", "class", "category", "action", "pose", "gesture", "target")
MAX_READABILITY_CHECKS = 2000
LAYOUT_TITLES = {
    "labeled_directories": "one folder per label",
    "labeled_files": "labelled file names (label.N.ext)",
    "annotation": "annotation file",
    "none": "no training data here",
}


def is_media_file(path: Path, media: str) -> bool:
    """Whether `path` is a file of `media` ("image" or "video"), by its name."""
    if media == "video":
        from ..features.video import is_video_file  # no MediaPipe: that loads with the first detector

        return is_video_file(path)
    from ..features.image_io import is_image_file

    return is_image_file(path)


@dataclass
class Problem:
    """Something about the data a user should know before training. `level`: "error" or "warning"."""

    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass
class FolderAnalysis:
    """What one folder holds, as training data for one task."""

    folder: Path
    layout: str = "none"
    labels: dict[str, list[Path]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    annotation: dict | None = None  # file, file_column, label_column, start_column, end_column
    candidates: list[str] = field(default_factory=list)  # layouts this folder could be read as
    unreadable: set[Path] = field(default_factory=set)  # files check_readable found broken
    suggest_parent: bool = False  # this looks like one label's folder: the dataset is its parent

    @property
    def ok(self) -> bool:
        """Whether the folder can be trained on: a layout was found and nothing is an error."""
        return self.layout != "none" and not any(p.level == "error" for p in self.problems)

    @property
    def counts(self) -> dict[str, int]:
        """The number of examples of each label."""
        return {label: len(paths) for label, paths in self.labels.items()}

    def error(self, message: str) -> None:
        """Record a problem that keeps the folder from being used."""
        self.problems.append(Problem("error", message))

    def warn(self, message: str) -> None:
        """Record a problem training can live with."""
        self.problems.append(Problem("warning", message))


def _short(paths, limit: int = 5) -> str:
    names = [str(p) for p in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _scan_tree(folder: Path, root: Path, media: str, base: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(media files, other files, links leading outside root) below `folder`, links not followed."""
    found, other, escapes = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for d in dirnames:
            if (here / d).is_symlink() and not is_within(here / d, root):
                escapes.append((here / d).relative_to(base))
        for name in sorted(filenames):
            if not _visible(name):
                continue
            p = here / name
            if p.is_symlink() and not is_within(p, root):
                escapes.append(p.relative_to(base))
            elif is_media_file(p, media):
                found.append(p)
            else:
                other.append(p)
    return found, other, escapes


def _annotation_files(folder: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """(annotation files inside root, annotation names that are links leading outside it).

    `is_file()` follows links, so a `labels.csv` link to a table elsewhere would otherwise be read (and
    its cells echoed in warnings); such names are only reported, never opened.
    """
    inside, outside = [], []
    for p in sorted(folder.iterdir()):
        if not _visible(p.name) or p.suffix.lower() not in ANNOTATION_SUFFIXES:
            continue
        if p.is_symlink() and not is_within(p, root):
            outside.append(p)
        elif p.is_file():
            inside.append(p)
    return inside, outside


def read_annotation(path: Path) -> pd.DataFrame:
    """An annotation file as a pandas DataFrame, read exactly as the library will read it for training
    (`data.annotations.read_annotation_file`: CSV with string cells, or a JSON array of objects / object
    of equal-length arrays), so the picker never calls ready a table the task cannot read."""
    from ..data.annotations import read_annotation_file

    return read_annotation_file(path)


def _guess_columns(df, folder: Path, root: Path, media: str) -> dict | None:
    """Which columns name the file and the label (and, for videos, start and end times)."""
    columns = [str(c) for c in df.columns]
    best, best_score = None, 0.0
    for col in columns:
        values = [v for v in df[col].tolist() if isinstance(v, str) and v]
        if not values:
            continue
        sample = values[:50]
        hits = sum(1 for v in sample if is_media_file(Path(v), media))
        score = hits / len(sample) + (0.5 if col.lower() in FILE_COLUMN_NAMES else 0.0)
        if hits and score > best_score:
            best, best_score = col, score
    if best is None:
        return None
    rest = [c for c in columns if c != best]
    label = next((c for c in rest if c.lower() in LABEL_COLUMN_NAMES), None)
    if label is None:
        from pandas.api.types import is_object_dtype, is_string_dtype

        # Text columns: `object` before pandas 3, its `str` dtype since (`dtype == object` misses those).
        label = next((c for c in rest if (is_object_dtype(df[c]) or is_string_dtype(df[c]))
                      and "start" not in c.lower() and "end" not in c.lower()), None)
    if label is None:
        return None
    start = next((c for c in rest if "start" in c.lower()), None) if media == "video" else None
    end = next((c for c in rest if "end" in c.lower() and c != start), None) if media == "video" else None
    return {"file_column": best, "label_column": label, "start_column": start, "end_column": end}


def _analyze_annotation(a: FolderAnalysis, path: Path, root: Path, media: str) -> bool:
    real = path.resolve()  # read (now and when training) the real file, checked to be inside root
    if not is_within(real, root):
        a.error(f"{path.name} is a link that leads outside the data folder; it is not read "
                "(copy the file into the data folder instead)")
        return False
    try:
        df = read_annotation(real)
    except Exception as err:  # noqa: BLE001 - shown to the user
        a.warn(f"{path.name} cannot be read as an annotation table: {err}")
        return False
    cols = _guess_columns(df, a.folder, root, media)
    if cols is None:
        a.warn(f"{path.name}: found no column of {media} file names next to a label column "
               f"(columns: {', '.join(map(str, df.columns))})")
        return False
    a.layout = "annotation"
    a.annotation = {"file": real, **cols}
    missing, escapes = [], []
    for value, label in zip(df[cols["file_column"]].tolist(), df[cols["label_column"]].tolist()):
        if not isinstance(value, str) or not value:
            continue
        try:
            p = resolve_under_root(a.folder, value)
            if not is_within(p, root):
                raise PathOutsideRootError(value, root)
        except PathOutsideRootError:
            escapes.append(value)
            continue
        if not p.is_file():
            missing.append(value)
            continue
        a.labels.setdefault(str(label), []).append(p)
    if escapes:
        a.error(f"{path.name} names files outside the data folder ({_short(escapes)}); "
                "only files inside it can be used")
    if missing:
        a.warn(f"{len(missing)} rows of {path.name} name files that do not exist and will be skipped: "
               f"{_short(missing)}")
    return True


def check_readable(paths: list[Path], media: str) -> list[tuple[Path, str]]:
    """(path, reason) for each file that cannot be read as an image or a video."""
    bad = []
    for p in paths[:MAX_READABILITY_CHECKS]:
        try:
            if p.stat().st_size == 0:
                bad.append((p, "the file is empty"))
                continue
            if media == "video":
                try:
                    from ..features.video import probe_video
                except ImportError:
                    continue
                probe_video(p)
            else:
                from ..features.image_io import load_image

                # Decoded the way training reads it (Image.verify() is a no-op for JPEG: it passed
                # truncated photos that training then skipped). JPEGs decode at 1/8 scale, cheaply.
                load_image(p, max_side=64)
        except Exception as err:  # noqa: BLE001 - any failure means unreadable
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            bad.append((p, str(reason)))
    return bad


def analyze_folder(folder: Path, root: Path, media: str = "image", layout: str = "auto",
                   check_files: bool = True, min_per_class: int = 10) -> FolderAnalysis:
    """Detect how `folder` (inside `root`) holds labelled examples of `media` ("image" or "video"),
    count them and list problems.

    `layout`: "auto" (annotation file, else one folder per label, else labelled file names) or one
    of "labeled_directories", "labeled_files", "annotation" to force it. A label with fewer than
    `min_per_class` examples draws a warning; `check_files` decodes each file (up to
    MAX_READABILITY_CHECKS) the way training reads it.
    """
    root = Path(root).resolve()
    folder = Path(folder)
    a = FolderAnalysis(folder)
    what = f"{media}s"
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name))
    direct = sorted(p for p in folder.iterdir() if p.is_file() and _visible(p.name))
    annotations, outside_annotations = _annotation_files(folder, root)
    escaping = [p.name for p in folder.iterdir()
                if p.is_symlink() and not is_within(p, root) and p not in outside_annotations]
    for p in outside_annotations:  # whatever the layout: the folder is not usable as it stands
        a.error(f"{p.name}: the link leads outside the data folder, so it is not read; "
                "copy the file into the data folder instead")
    if annotations:
        a.candidates.append("annotation")
    if subdirs:
        a.candidates.append("labeled_directories")
    if any(is_media_file(p, media) for p in direct):
        a.candidates.append("labeled_files")

    chosen = layout
    if layout == "auto":
        chosen = "none"
        if "annotation" in a.candidates:
            chosen = "annotation"
        elif "labeled_directories" in a.candidates:
            chosen = "labeled_directories"
        elif "labeled_files" in a.candidates:
            chosen = "labeled_files"

    if chosen == "annotation":
        if not annotations:
            if not outside_annotations:  # else: already said why the one here is not read
                a.error("there is no annotation file (.csv or .json) in this folder")
        elif not _analyze_annotation(a, annotations[0], root, media):
            chosen = ("labeled_directories" if "labeled_directories" in a.candidates
                      else "labeled_files" if "labeled_files" in a.candidates else "none")
    if chosen == "labeled_directories":
        a.layout = chosen
        others, escapes = [], list(escaping)
        for sub in subdirs:
            if sub.is_symlink() and not is_within(sub, root):
                continue  # already in `escaping`
            found, other, esc = _scan_tree(sub, root, media, folder)
            a.labels[sub.name] = found
            others += other
            escapes += [str(e) for e in esc]
        if escapes:
            a.error(f"links pointing outside the data folder: {_short(escapes)}; remove them or copy the files in")
        others = [p for p in others if p.suffix.lower() not in ANNOTATION_SUFFIXES]
        if others:
            a.warn(f"{len(others)} files are not {what} and will be skipped: "
                   f"{_short([p.relative_to(folder) for p in others])}")
        loose = [p for p in direct if is_media_file(p, media)]
        if loose:
            a.warn(f"{len(loose)} {what} lie directly in this folder, outside any label folder, and are ignored")
    elif chosen == "labeled_files":
        a.layout = chosen
        if escaping:
            a.error(f"links pointing outside the data folder: {_short(escaping)}; remove them or copy the files in")
        unlabeled = []
        for p in direct:
            if not is_media_file(p, media) or (p.is_symlink() and not is_within(p, root)):
                continue
            label = p.name.split(".", 1)[0]
            if not label:
                unlabeled.append(p.name)
                continue
            a.labels.setdefault(label, []).append(p)
        if unlabeled:
            a.warn(f"{len(unlabeled)} files have no label before the first period: {_short(unlabeled)}")
    elif chosen == "none" or a.layout == "none":
        a.layout = "none"
        return a

    # Problems every layout shares ---------------------------------------------------------
    total = sum(len(v) for v in a.labels.values())
    empty = [label for label, paths in a.labels.items() if not paths]
    if total == 0:
        a.error(f"no {what} found here; open the folder that holds your labelled {what}")
        return a
    if empty:
        a.error(f"label folders without {what}: {_short(empty)}; add {what} or remove these folders")
    nonempty = [label for label, paths in a.labels.items() if paths]
    if (a.layout == "labeled_files" and len(nonempty) >= 2
            and all(len(a.labels[label]) == 1 for label in nonempty)):
        # Each file its own label: a label's folder (`0/`) opened instead of the dataset (its parent). Label
        # folders of one file each (a first clip recorded per label) are a dataset, if a small one.
        a.suggest_parent = folder.resolve() != root
        parent = f" — use the parent folder ({folder.parent.name or 'the data folder'}/) instead?" if a.suggest_parent else ""
        a.error(f"every label has only one {media}: {folder.name}/ looks like the {what} of one "
                f"label, not a dataset of labels{parent}")
    elif len(nonempty) == 1:
        a.error(f"only one label ({nonempty[0]!r}): a classifier needs at least two labels")
    few = {label: len(p) for label, p in a.labels.items() if 0 < len(p) < min_per_class}
    if few:
        detail = ", ".join(f"{k!r} ({v})" for k, v in sorted(few.items()))
        a.warn(f"labels with fewer than {min_per_class} {what}: {detail}; "
               f"add more examples for a reliable model")
    if check_files:
        files = sorted({p for paths in a.labels.values() for p in paths})
        bad = check_readable(files, media)
        a.unreadable = {p for p, _why in bad}
        if bad:
            shown = "; ".join(f"{p.relative_to(folder) if p.is_relative_to(folder) else p.name}: {why}"
                              for p, why in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            a.warn(f"{len(bad)} unreadable files will be skipped: {shown}{more}")
    return a


def make_data_source(task_class: type, analysis: FolderAnalysis) -> Any:
    """The task's DataSource for an analysed folder (`analysis.ok` must be true)."""
    ds = task_class.DataSource
    folder = analysis.folder
    if analysis.layout == "labeled_directories":
        return ds.labeled_directories(folder)
    if analysis.layout == "labeled_files":
        return ds.labeled_files(folder)
    if analysis.layout == "annotation":
        ann = analysis.annotation
        if hasattr(ds, "directory_with_videos_and_annotation"):
            return ds.directory_with_videos_and_annotation(
                folder, ann["file"], ann["file_column"], ann["label_column"],
                start_time_column=ann.get("start_column"), end_time_column=ann.get("end_column"))
        if hasattr(ds, "directory_with_images_and_annotation"):
            return ds.directory_with_images_and_annotation(folder, ann["file"], ann["file_column"],
                                                           ann["label_column"])
        return ds.files_by_label({label: [str(p) for p in paths] for label, paths in analysis.labels.items()})
    raise ValueError(f"no training data layout in {folder}")


def _limited_iter(folder: Path, limit: int):
    """Up to `limit` visible file names below `folder` (for the folder list's counts)."""
    n = 0
    for _dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        for name in filenames:
            if _visible(name):
                yield name
                n += 1
                if n >= limit:
                    return
