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

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..data import folders
from ..data.folders import (  # noqa: F401 - the analysis lived here: its names stay importable from here
    ANNOTATION_SUFFIXES,
    FILE_COLUMN_NAMES,
    LABEL_COLUMN_NAMES,
    LAYOUT_TITLES,
    MAX_READABILITY_CHECKS,
    FolderAnalysis,
    Problem,
    _limited_iter,
    _visible,
    check_readable,
    make_data_source,
    read_annotation,
)
from ._look import marker_html, message_html
from ._media import media_thumbnails
from ._paths import (
    PathOutsideRootError,
    default_data_root,
    hide_root,
    is_within,
    relative_to_root,
    resolve_under_root,
    sanitize_filename,
)
from ._tasks import TaskInfo, task_info
from ._uploads import MAX_UPLOAD_BYTES, MAX_ZIP_MEMBERS, save_uploads, uploaded_entries

if TYPE_CHECKING:
    from ..tasks._base import ClassifierTask


def analyze_folder(folder: Path, root: Path, task: TaskInfo | str = "image", layout: str = "auto",
                   check_files: bool = True) -> FolderAnalysis:
    """Detect how `folder` holds labelled examples for `task`, count them and list problems
    (`data.folders.analyze_folder` with the task's media and its fewest examples per label)."""
    info = task_info(task)
    return folders.analyze_folder(folder, root, info.media, layout, check_files, info.min_per_class)


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

    def __init__(self, task: str | type | ClassifierTask | TaskInfo = "image", root: str | os.PathLike | None = None,
                 path: str | None = None, thumbnails_per_class: int = 3, uploads_folder: str = "uploads",
                 check_files: bool = True, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 max_zip_members: int = MAX_ZIP_MEMBERS, **kwargs: object):
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
        self.uploaded: list[Path] = []  # the files the Upload button saved (its label counts them)
        self._showing_uploaded = False

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
            # A data root of one's own ($CREATEML_WIDGETS_DATA_ROOT, as the dashboard is started with) holding
            # one dataset folder, or one this task can train on among others: open that, not an error about the root.
            subs = [p for p in sorted(self.root.iterdir()) if p.is_dir() and _visible(p.name)
                    and p.name != uploads_folder and is_within(p, self.root)]
            if len(subs) > 1:
                subs = [p for p in subs[:20] if self._trainable(p)]
            if len(subs) == 1:
                self.navigate(subs[0].name)

    def _trainable(self, folder: Path) -> bool:
        """Whether this task could train on `folder` as it is (detected layout, no errors)."""
        try:
            a = analyze_folder(folder, self.root, self.task, "auto", False)
        except Exception:  # noqa: BLE001 - an unreadable folder is not one to open
            return False
        return a.ok

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
        """Open the parent of the open folder (the data folder stays the top)."""
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
        """The real path of the uploads folder inside the data folder."""
        return resolve_under_root(self.root, self.uploads_folder)

    def save_uploads(self, files: Iterable[Mapping], label: str = "") -> list[Path]:
        """Save uploaded files ({name, content} dicts, as FileUpload gives) under root/uploads[/label].

        Names are sanitised; a .zip is unpacked (member paths sanitised). One upload may write at most
        `max_upload_bytes` (zips counted unpacked) and unpack at most `max_zip_members` files: an upload
        over either limit is refused before anything is written. Returns the saved paths. Opens the
        uploads folder afterwards.
        """
        target = self.uploads_dir
        if label.strip():
            target = target / sanitize_filename(label.strip(), fallback="label")
        saved = save_uploads(files, target, self.root, self.max_upload_bytes, self.max_zip_members)
        self.navigate(relative_to_root(self.uploads_dir, self.root))
        return saved

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files or self._showing_uploaded:
            return
        try:
            saved = self.save_uploads(list(files), self.upload_label.value)
            self.uploaded.extend(saved)
            self._say(f"saved {len(saved)} files in {relative_to_root(self.uploads_dir, self.root)}/", "ok")
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._say(f"upload failed: {err}", "error")
        finally:
            self._show_uploaded()

    def _show_uploaded(self) -> None:
        """The button's value becomes the files saved so far, without their bytes: its label, "Upload (N)",
        counts them (a zip counts as the files it held), and the uploaded bytes leave the widget state."""
        entries = uploaded_entries(self.uploaded, self.root)
        self._showing_uploaded = True
        try:
            self.upload.value = tuple(entries)
        finally:
            self._showing_uploaded = False
        self.upload.tooltip = (f"{len(entries)} files uploaded into {self.uploads_folder}/ so far" if entries
                               else "add photos, videos, annotation files or a .zip")


