"""DataSourcePicker: choose training data inside a root folder, see what is in it, and fix problems early.

The picker browses folders under `root` (never outside it: no `..`, no absolute paths, no links
that lead elsewhere), detects the layout of the folder it is in (one subfolder per label, files
named `label.N.jpg`, or an annotation CSV/JSON), shows per-label counts with thumbnails and warns
about what would hurt training. `picker.data_source` is the task's DataSource for that folder
(None while the folder cannot be used). Uploads are saved into `root/uploads`.

Without a `root`, the root is the folder named by the environment variable
`CREATEML_WIDGETS_DATA_ROOT`, else the bundled samples.
"""
from __future__ import annotations

import contextlib
import html
import io
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as widgets
import traitlets

from ._look import marker_html, message_html
from ._media import media_thumbnails
from ._paths import (
    PathOutsideRootError,
    default_data_root,
    hide_root,
    is_within,
    mkdir_under_root,
    relative_to_root,
    resolve_under_root,
    sanitize_filename,
    unique_path,
)
from ._tasks import TaskInfo, is_media_file, task_info

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".csv", ".json")
FILE_COLUMN_NAMES = ("image", "video", "file", "filename", "file_name", "path", "filepath", "image_path",
                     "video_path", "name")
LABEL_COLUMN_NAMES = ("label", "class", "category", "action", "pose", "gesture", "target")
MAX_READABILITY_CHECKS = 2000
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # total uncompressed bytes one upload (zip included) may write
MAX_ZIP_MEMBERS = 20_000
LAYOUT_TITLES = {
    "labeled_directories": "one folder per label",
    "labeled_files": "labelled file names (label.N.ext)",
    "annotation": "annotation file",
    "none": "no training data here",
}


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
        return self.layout != "none" and not any(p.level == "error" for p in self.problems)

    @property
    def counts(self) -> dict[str, int]:
        return {label: len(paths) for label, paths in self.labels.items()}

    def error(self, message: str) -> None:
        self.problems.append(Problem("error", message))

    def warn(self, message: str) -> None:
        self.problems.append(Problem("warning", message))


# ---------------------------------------------------------------------------------------------
# Analysis (pure functions: the widget only shows their result)
# ---------------------------------------------------------------------------------------------
def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.startswith("__MACOSX")


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


def read_annotation(path: Path):
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


def analyze_folder(folder: Path, root: Path, task: TaskInfo | str = "image", layout: str = "auto",
                   check_files: bool = True) -> FolderAnalysis:
    """Detect how `folder` holds labelled examples for `task`, count them and list problems.

    `layout`: "auto" (annotation file, else one folder per label, else labelled file names) or one
    of "labeled_directories", "labeled_files", "annotation" to force it.
    """
    info = task_info(task)
    media, root = info.media, Path(root).resolve()
    folder = Path(folder)
    a = FolderAnalysis(folder)
    what = info.media_plural
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
        a.error(f"every label has only one {info.media}: {folder.name}/ looks like the {info.media_plural} of one "
                f"label, not a dataset of labels{parent}")
    elif len(nonempty) == 1:
        a.error(f"only one label ({nonempty[0]!r}): a classifier needs at least two labels")
    few = {label: len(p) for label, p in a.labels.items() if 0 < len(p) < info.min_per_class}
    if few:
        detail = ", ".join(f"{k!r} ({v})" for k, v in sorted(few.items()))
        a.warn(f"labels with fewer than {info.min_per_class} {what}: {detail}; "
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


def make_data_source(task_class: type, analysis: FolderAnalysis):
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


# ---------------------------------------------------------------------------------------------
# The widget
# ---------------------------------------------------------------------------------------------
class DataSourcePicker(widgets.VBox):
    """Browse folders under `root`, see what a folder holds, and get the task's DataSource.

    >>> picker = DataSourcePicker("image")                  # starts in the bundled sample
    >>> picker.data_source                                    # doctest: +SKIP
    MLImageClassifier.DataSource.labeled_directories(.../sign-language-digits)
    """

    path = traitlets.Unicode("", help="the open folder, relative to root ('' is root)")
    layout_choice = traitlets.Unicode("auto", help="auto, labeled_directories, labeled_files or annotation")
    data_source = traitlets.Any(None, allow_none=True, help="the task's DataSource, or None")
    detected_layout = traitlets.Unicode("none")
    counts = traitlets.Dict()
    problems = traitlets.List()
    ready = traitlets.Bool(False)

    def __init__(self, task="image", root=None, path: str | None = None, thumbnails_per_class: int = 3,
                 uploads_folder: str = "uploads", check_files: bool = True, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 max_zip_members: int = MAX_ZIP_MEMBERS, **kwargs):
        self.task = task_info(task)
        self.root = (Path(root).expanduser().resolve() if root is not None else default_data_root())
        if not self.root.is_dir():
            raise NotADirectoryError(f"the data root {self.root} is not a folder")
        self.thumbnails_per_class = thumbnails_per_class
        self.uploads_folder = uploads_folder
        self.max_upload_bytes = int(max_upload_bytes)  # what one upload may write (zips counted unpacked)
        self.max_zip_members = int(max_zip_members)  # files one upload may unpack
        self.check_files = check_files
        self.analysis: FolderAnalysis | None = None
        self._navigating = False

        self.location = widgets.Text(description="Folder", placeholder="a folder inside the data root",
                                     continuous_update=False, layout=widgets.Layout(width="420px"))
        self.location.add_class("cmlw-picker-path")
        self.up_button = widgets.Button(description="Up", icon="arrow-up", tooltip="the parent folder",
                                        layout=widgets.Layout(width="70px"))
        self.up_button.add_class("cmlw-picker-up")
        self.root_label = widgets.HTML()
        self.folders = widgets.Select(options=[], rows=7, description="Open",
                                      layout=widgets.Layout(width="420px"))
        self.folders.add_class("cmlw-picker-folders")
        self.layout_dropdown = widgets.Dropdown(
            options=[("detect automatically", "auto"), ("one folder per label", "labeled_directories"),
                     ("labelled file names", "labeled_files"), ("annotation file", "annotation")],
            value="auto", description="Layout")
        self.layout_dropdown.add_class("cmlw-picker-layout")
        self.summary = widgets.HTML()
        self.summary.add_class("cmlw-picker-summary")
        self.problems_html = widgets.HTML()
        self.problems_html.add_class("cmlw-picker-problems")
        self.classes_html = widgets.HTML()
        self.classes_html.add_class("cmlw-picker-classes")
        self.message = widgets.HTML()
        self.message.add_class("cmlw-picker-message")
        self.upload_label = widgets.Text(description="Label", placeholder="optional: the label of these files",
                                         layout=widgets.Layout(width="320px"))
        self.upload_label.add_class("cmlw-picker-upload-label")
        self.upload = widgets.FileUpload(accept=self._accept(), multiple=True, description="Upload")
        self.upload.add_class("cmlw-picker-upload")
        self.parent_button = widgets.Button(description="Use the parent folder", icon="level-up",
                                            layout=widgets.Layout(width="auto", display="none"),
                                            tooltip="open the folder that holds the label folders")
        self.parent_button.add_class("cmlw-picker-use-parent")
        self.parent_button.on_click(lambda _b: self.go_up())

        self.up_button.on_click(lambda _b: self.go_up())
        self.location.observe(self._on_location, "value")
        self.folders.observe(self._on_folder_selected, "value")
        self.layout_dropdown.observe(lambda ch: setattr(self, "layout_choice", ch["new"]), "value")
        self.upload.observe(self._on_upload, "value")

        upload_box = widgets.HBox([self.upload_label, self.upload])
        children = [
            widgets.HBox([self.location, self.up_button, self.root_label]),
            widgets.HBox([self.folders, widgets.VBox([self.summary, self.layout_dropdown])]),
            self.message, self.problems_html, self.parent_button, self.classes_html,
            widgets.HTML("<b>Add your own data</b> — files (or a .zip of label folders) are saved in "
                         f"<code>{html.escape(uploads_folder)}/</code> inside the data folder."),
            upload_box,
        ]
        super().__init__(children=children, **kwargs)
        self.add_class("cmlw-data-source-picker")
        start = path
        if start is None:
            sample = self.task.sample()
            start = relative_to_root(sample, self.root) if sample.exists() and is_within(sample, self.root) else ""
        self.navigate(start)
        if root is None and path is None and not start and not self.ready:
            # A data root of one's own ($CREATEML_WIDGETS_DATA_ROOT, as the dashboard is started with)
            # holding one dataset folder: open that, not an error about the root.
            subs = [p for p in self.root.iterdir() if p.is_dir() and _visible(p.name) and p.name != uploads_folder
                    and is_within(p, self.root)]
            if len(subs) == 1:
                self.navigate(subs[0].name)

    # -- navigation --------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """The open folder (an absolute, resolved path inside root)."""
        return resolve_under_root(self.root, self.path)

    def resolve(self, relative: str) -> Path:
        """The real path of `relative` under root; PathOutsideRootError for anything outside it."""
        return resolve_under_root(self.root, relative)

    def navigate(self, relative: str) -> bool:
        """Open `relative` (a folder under root). Returns False, and says why, if it cannot be opened."""
        try:
            target = resolve_under_root(self.root, relative)
        except PathOutsideRootError as err:
            self._say(str(err), "error")
            self._sync_location()
            return False
        if not target.is_dir():
            self._say(f"{relative!r} is not a folder inside the data folder", "error")
            self._sync_location()
            return False
        new = relative_to_root(target, self.root)
        self._say("")
        if new == self.path:
            self.refresh()
        else:
            self.path = new  # -> _on_path -> refresh
        return True

    def go_up(self) -> None:
        if self.path:
            self.navigate(str(Path(self.path).parent) if "/" in self.path else "")

    @traitlets.observe("path")
    def _on_path(self, change) -> None:
        self.refresh()

    @traitlets.observe("layout_choice")
    def _on_layout_choice(self, change) -> None:
        if self.layout_dropdown.value != change["new"]:
            self.layout_dropdown.value = change["new"]
        self.refresh()

    def _on_location(self, change) -> None:
        if not self._navigating and change["new"] != self.path:
            self.navigate(change["new"].strip())

    def _on_folder_selected(self, change) -> None:
        if self._navigating or change["new"] is None:
            return
        self.navigate(f"{self.path}/{change['new']}" if self.path else change["new"])

    def _sync_location(self) -> None:
        self._navigating = True
        try:
            self.location.value = self.path
        finally:
            self._navigating = False

    def _list_folders(self) -> list[tuple[str, str]]:
        out = []
        folder = self.folder
        for p in sorted(folder.iterdir(), key=lambda q: q.name.lower()):
            if not _visible(p.name) or not p.is_dir() or not is_within(p, self.root):
                continue  # links leading outside root are never offered
            media = sum(1 for _ in _limited_iter(p, 1000))
            # Plain text: options cannot hold markup, and an emoji (📁) is a box without an emoji font.
            out.append((f"{p.name}/   ({media} files)", p.name))
        return out

    # -- analysis ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the open folder: list its subfolders, detect the layout, count and check."""
        self._navigating = True
        try:
            self.location.value = self.path
            self.folders.options = self._list_folders()
            self.folders.value = None
        finally:
            self._navigating = False
        root_name = html.escape(self.root.name or str(self.root))
        self.root_label.value = (f"<span style='color:#666'>in <code>{root_name}/</code></span>")
        try:
            a = analyze_folder(self.folder, self.root, self.task, self.layout_choice, self.check_files)
        except Exception as err:  # noqa: BLE001 - an unreadable folder is shown, not raised
            a = FolderAnalysis(self.folder)
            a.error(f"cannot read this folder: {err}")
        self.analysis = a
        source = None
        if a.ok:
            try:
                source = make_data_source(self.task.load(), a)
            except Exception as err:  # noqa: BLE001 - the library's message is the clearest
                a.error(f"{type(err).__name__}: {err}")
        # What is shown (and what the app repeats) names paths relative to the root, never the server's.
        self.problems = [{"level": p.level, "message": hide_root(p.message, self.root)} for p in a.problems]
        self.counts = a.counts
        self.detected_layout = a.layout
        self.data_source = source
        self.ready = source is not None
        self._render()

    def _render(self) -> None:
        a = self.analysis
        what = self.task.media_plural
        total = sum(a.counts.values())
        status = ("<span class='cmlw-picker-ready' style='color:#1a7f37'>✔ ready to train</span>" if self.ready
                  else "<span class='cmlw-picker-not-ready' style='color:#b25000'>not usable yet</span>")
        if a.layout == "none":
            self.summary.value = (f"<div>No labelled {what} here. Open the folder that holds one subfolder per "
                                  f"label, files named <code>label.1.jpg</code>, or an annotation file.</div>")
        else:
            self.summary.value = (f"<div><b>{html.escape(LAYOUT_TITLES[a.layout])}</b><br>{len(a.labels)} labels · "
                                  f"{total} {what}<br>{status}</div>")
        items = []
        for p in self.problems:
            color = "#c62828" if p["level"] == "error" else "#b25000"
            items.append(f"<li class='cmlw-problem cmlw-problem-{p['level']}' style='color:{color};margin:2px 0'>"
                         f"{marker_html(p['level'])}{html.escape(p['message'])}</li>")
        self.problems_html.value = (f"<ul style='margin:4px 0;padding-left:0;list-style:none'>{''.join(items)}</ul>"
                                    if items else "")
        self.parent_button.layout.display = None if a.suggest_parent else "none"
        self.classes_html.value = self._classes_html()

    def _classes_html(self) -> str:
        a = self.analysis
        if not a.labels:
            return ""
        peak = max(1, max(a.counts.values()))
        hand = self.task.key in ("hand_pose", "hand_action")
        rows = []
        for label, paths in sorted(a.labels.items(), key=lambda kv: kv[0]):
            n = len(paths)
            low = 0 < n < self.task.min_per_class
            bar = (f"<span style='display:inline-block;height:10px;width:{int(120 * n / peak)}px;"
                   f"background:{'#f0a030' if low or n == 0 else '#0071e3'};border-radius:2px'></span>")
            thumbs = ""
            if self.thumbnails_per_class and paths:
                count = 1 if self.task.media == "video" else (min(2, self.thumbnails_per_class) if hand
                                                                else self.thumbnails_per_class)
                figs = []
                readable_first = sorted(paths, key=lambda q: q in a.unreadable)  # stable: keeps name order
                for p in readable_first[:count]:
                    figs += media_thumbnails(p, self.task.media, hand=hand, size=72)
                thumbs = "".join(figs)
            rows.append(f"<tr class='cmlw-class-row'><td class='cmlw-class-label' style='padding:2px 8px;"
                        f"font-weight:600'>{html.escape(label)}</td><td class='cmlw-class-count' "
                        f"style='text-align:right;padding:2px 8px'>{n}</td><td>{bar}</td><td>{thumbs}</td></tr>")
        return ("<table class='cmlw-class-table' style='border-collapse:collapse'><tr><th style='text-align:left'>"
                f"label</th><th>{html.escape(self.task.media_plural)}</th><th></th><th>examples</th></tr>"
                + "".join(rows) + "</table>")

    def _say(self, text: str, level: str = "info") -> None:
        self.message.value = message_html("cmlw-picker", text, level, self.root)

    # -- uploads -----------------------------------------------------------------------------
    def _accept(self) -> str:
        media = "video/*,.mp4,.mov,.m4v,.avi,.webm,.mkv" if self.task.media == "video" else "image/*"
        return f"{media},.csv,.json,.zip"

    @property
    def uploads_dir(self) -> Path:
        return resolve_under_root(self.root, self.uploads_folder)

    def save_uploads(self, files, label: str = "") -> list[Path]:
        """Save uploaded files ({name, content} dicts, as FileUpload gives) under root/uploads[/label].

        Names are sanitised; a .zip is unpacked (member paths sanitised). One upload may write at most
        `max_upload_bytes` (zips counted unpacked) and unpack at most `max_zip_members` files: an upload
        over either limit is refused before anything is written. Returns the saved paths. Opens the
        uploads folder afterwards.
        """
        uploads = [(sanitize_filename(f.get("name", "upload")), bytes(f.get("content", b""))) for f in files]
        total, members = 0, 0
        for name, content in uploads:  # check the limits first: a refused upload leaves nothing behind
            if name.lower().endswith(".zip"):
                infos = _zip_files(content, name)
                members += len(infos)
                if members > self.max_zip_members:
                    raise ValueError(f"with {name} the upload holds {members} files; at most "
                                     f"{self.max_zip_members} are accepted in one upload; nothing was saved")
                total += sum(m.file_size for m in infos)
            else:
                total += len(content)
            if total > self.max_upload_bytes:
                raise ValueError(f"with {name} the upload would write more than the limit of "
                                 f"{_megabytes(self.max_upload_bytes)} (a zip counts unpacked); nothing was saved")
        target = self.uploads_dir
        if label.strip():
            target = target / sanitize_filename(label.strip(), fallback="label")
        saved: list[Path] = []
        made: list[Path] = []  # folders this upload created, removed again (when empty) if it fails
        target = self._mkdir(target, made)
        budget = [self.max_upload_bytes]
        counters: dict = {}  # next free "-N" per folder and name: N same-named files cost N checks, not N²
        try:
            for name, content in uploads:
                if name.lower().endswith(".zip"):
                    self._unzip(content, target, budget, counters, saved, made)
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
        self.navigate(relative_to_root(self.uploads_dir, self.root))
        return saved

    def _mkdir(self, folder: Path, made: list[Path]) -> Path:
        """mkdir_under_root (never through a link leading outside root), noting the levels it creates."""
        root = self.root.resolve()
        missing = [level for level in [folder, *folder.parents] if level.is_relative_to(root) and not level.exists()]
        try:
            return mkdir_under_root(folder, self.root)
        finally:
            made.extend(level for level in sorted(missing, key=lambda q: len(q.parts)) if level.is_dir())

    def _unzip(self, content: bytes, target: Path, budget: list[int], counters: dict, saved: list[Path],
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
                        folders[wanted] = self._mkdir(wanted, made)
                    except (PathOutsideRootError, FileExistsError, NotADirectoryError):
                        folders[wanted] = None
                folder = folders[wanted]
                if folder is None:
                    log.info("zip member %r skipped: its folder would be outside the data folder", m.filename)
                    continue
                with zf.open(m) as src:  # read (and CRC-checked) before any file is created for it
                    data = src.read(m.file_size + 1)[: m.file_size]  # never more than the header says
                _write_new(unique_path(folder, safe[-1], counters), data, saved)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        try:
            saved = self.save_uploads(list(files), self.upload_label.value)
            self._say(f"saved {len(saved)} files in {relative_to_root(self.uploads_dir, self.root)}/", "ok")
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._say(f"upload failed: {err}", "error")
        finally:
            self.upload.value = ()


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
