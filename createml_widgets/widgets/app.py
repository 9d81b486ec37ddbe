"""TrainerApp: Create ML's training window as one widget — data, parameters, training, evaluation,
preview and export — for one task (switchable), starting on the bundled sample so it is ready to train.

It composes the five widgets and calls the library; it holds no training logic of its own.
"""
from __future__ import annotations

import contextlib
import html
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..errors import CreateMLError
from ..session import MLTrainingSessionParameters
from ._export_step import (  # noqa: F401 - the export menus' names stay importable from here
    EXPORT_FORMATS,
    EXPORT_PRECISION_HELP,
    EXPORT_PRECISIONS,
    MAX_DOWNLOAD_BYTES,
    ExportStep,
)
from ._leave_guard import LeaveGuard, return_freed_memory, served_by_voila
from ._look import message_html, no_null_titles, style_while_enabled
from ._media import release_hand_detector
from ._paths import hide_root
from ._sessions import interrupted_session, session_folder, sessions_root
from ._sessions import session_parameters as _session_parameters
from ._tasks import TASKS, task_info
from .camera import Camera, LivePreview
from .confusion_matrix import ConfusionMatrix
from .data_source_picker import DataSourcePicker
from .parameter_form import InvalidParametersError, ParameterForm
from .prediction_preview import PredictionPreview
from .training_progress import TrainingProgress, iteration_bound

if TYPE_CHECKING:
    from ..session import MLJob

log = logging.getLogger(__name__)

STYLE = (Path(__file__).with_name("style.css"))


def _style_html() -> str:
    try:
        return f"<style>{STYLE.read_text(encoding='utf-8')}</style>"
    except OSError:
        return ""


def available_tasks() -> list[str]:
    """Task keys whose module is installed (checked without importing MediaPipe)."""
    out = []
    for key, info in TASKS.items():
        try:
            if importlib.util.find_spec(info.module) is not None:
                out.append(key)
        except (ImportError, ValueError):
            pass
    return out


# What one task's part of the app is made of: kept for the kernel's life, so switching back to a task
# shows its data, parameters, training and model as they were.
VIEW_ATTRS = ("info", "picker", "form", "train_button", "train_message", "progress", "confusion", "model_summary",
              "holdout_box", "preview", "camera", "live", "data_tabs", "preview_tabs", "export_name", "export_button",
              "download", "sections")
HOLDOUT_RATIO = 0.2  # what "Hold out 20% and train again" sets
def _leave_guard():
    return LeaveGuard()


def _section(step: int, title: str, *children: widgets.Widget, css: str = "") -> widgets.VBox:
    head = widgets.HTML(f"<div class='cmlw-section-title'><span class='cmlw-step'>{step}</span>"
                        f"{html.escape(title)}</div>")
    box = widgets.VBox([head, *children])
    box.add_class("cmlw-section")
    if css:
        box.add_class(css)
    return box


def _lazy_tabs(titles: tuple[str, ...], first: widgets.Widget, make_second, css: str) -> widgets.Tab:
    """A Tab of `first` and a widget made by `make_second()` when its tab is first opened.

    The camera widgets are anywidgets: their browser module must load within 2 s of the model's creation
    (anywidget's limit), which a page still drawing the whole app on a busy machine can miss; made when
    asked for, they load on an idle page (and a page that never uses the camera never loads them)."""
    holder = widgets.VBox()
    tabs = widgets.Tab(children=[first, holder], titles=titles)
    tabs.add_class(css)

    def opened(change) -> None:
        if change["new"] == 1 and not holder.children:
            holder.children = [make_second()]

    tabs.observe(opened, "selected_index")
    return tabs


class TrainerApp(ExportStep, widgets.VBox):
    """Train, evaluate, try and export a Create ML model from a dashboard.

    >>> TrainerApp()                                  # doctest: +SKIP  (image classifier, bundled sample)
    >>> TrainerApp("hand_pose", root="~/my-data")     # doctest: +SKIP

    `root` (where data is browsed and uploads are saved) defaults to `$CREATEML_WIDGETS_DATA_ROOT`,
    else the bundled samples folder. Training sessions are kept in `session_root` (default
    `$CREATEML_WIDGETS_SESSIONS`, else `sessions/` in the feature cache), one folder per task and data
    set: a new app (a reloaded page, a new kernel) finds a run that was interrupted and offers Resume.
    """

    task = traitlets.Unicode("image")
    model = traitlets.Any(None, allow_none=True)
    job = traitlets.Any(None, allow_none=True)
    export_path = traitlets.Any(None, allow_none=True)

    def __init__(self, task: str = "image", root: str | os.PathLike | None = None,
                 session_root: str | os.PathLike | None = None, **kwargs: object):
        self.root = Path(root).expanduser().resolve() if root is not None else None
        self.session_root = Path(session_root).expanduser().resolve() if session_root is not None else sessions_root()
        self._lock = threading.RLock()
        tasks = available_tasks()
        info = task_info(task)
        self.task_select = widgets.ToggleButtons(
            options=[(TASKS[k].title, k) for k in tasks], value=info.key if info.key in tasks else None,
            style={"button_width": "170px"})
        self.task_select.add_class("cmlw-task-select")
        self.title = widgets.HTML()
        self.body = widgets.VBox()
        self._views: dict[str, dict] = {}
        self.leave_guard = _leave_guard()
        extra = [self.leave_guard] if self.leave_guard is not None else []
        if self.leave_guard is not None:
            self.leave_guard.on_page_left(self.page_left)
        super().__init__(children=[widgets.HTML(_style_html()), self.title, self.task_select, self.body, *extra],
                         **kwargs)
        self.add_class("cmlw-app")
        self.task_select.observe(lambda ch: setattr(self, "task", ch["new"]), "value")
        self.task = info.key
        if self.task == "image" and not self.body.children:  # the trait did not change: build now
            self._build()

    # -- building ------------------------------------------------------------------------------
    @traitlets.observe("task")
    def _on_task(self, change) -> None:
        with self._lock:  # a run's last events (on its own thread) wait until the views are swapped
            self._switch(change)

    def _switch(self, change) -> None:
        if self.task_select.value != change["new"]:
            self.task_select.value = change["new"]
        old = change["old"]
        if (old in TASKS and getattr(self, "info", None) is not None and self.info.key == old
                and getattr(self, "sections", None) is not None):
            job = self.job
            if job is not None and not job.done():
                job.cancel()  # its session keeps the work: Resume continues it on switching back
            self._views[old] = {**{a: getattr(self, a, None) for a in VIEW_ATTRS},
                                "model": self.model, "job": self.job, "export_path": self.export_path}
        if change["new"] in self._views:
            self._restore(change["new"])
        else:
            self._build()
        self._release_others()

    def _restore(self, key: str) -> None:
        view = self._views[key]
        for attr in VIEW_ATTRS:
            setattr(self, attr, view[attr])
        self.model, self.job, self.export_path = view["model"], view["job"], view["export_path"]
        self._set_title()
        self.body.children = self.sections
        no_null_titles(self)
        # What happened while the task was hidden: its job stopped (or finished) after the switch.
        state = self.progress.state
        self.train_button.disabled = state in ("running", "cancelling")
        if self.progress.job is not None and self.progress.job is not self.job:
            self.job = self.progress.job
        if self.progress.model is not None and self.progress.model is not self.model:
            self._show_model(self.progress.model)
        elif state == "cancelled":
            self._say("stopped when you switched tasks — Resume continues where it stopped", "info")
        self._update_leave_guard()

    def _release_others(self) -> None:
        """Free what the tasks not shown built for prediction (networks, MediaPipe graphs, Core ML models):
        their models stay, and build them again when used."""
        for key, view in self._views.items():
            if key != self.task and view.get("model") is not None:
                with contextlib.suppress(Exception):
                    view["model"].release_resources()
            if key != self.task and view.get("live") is not None:
                view["live"].release()  # its MediaPipe graphs; made again on the next frame
        if self.task not in ("hand_pose", "hand_action"):
            with contextlib.suppress(Exception):
                release_hand_detector()  # the thumbnails' skeletons
        return_freed_memory()

    def _set_title(self) -> None:
        info = self.info
        self.title.value = (f"<div class='cmlw-app-title'>Create ML · {html.escape(info.title)}</div>"
                            f"<div class='cmlw-app-subtitle'>choose data, set parameters, train, look at the "
                            f"mistakes, try it, export it <span class='cmlw-createml-name'>"
                            f"({html.escape(info.class_name)})</span></div>")

    def _build(self) -> None:
        info = task_info(self.task)
        self.info = info
        self.model = None
        self.job = None
        self.export_path = None
        self._set_title()
        try:
            self.picker = DataSourcePicker(info.key, root=self.root)
            self.form = ParameterForm(info.key)
        except ImportError as err:
            self.body.children = [widgets.HTML(f"<div class='cmlw-error' style='color:#c62828'>"
                                               f"{html.escape(str(err))}</div>")]
            self.sections = None  # not kept: switching back tries again
            return
        self.train_button = widgets.Button(description="Train", icon="play", button_style="primary",
                                           tooltip="train on the chosen data with these parameters")
        self.train_button.add_class("cmlw-train-button")
        style_while_enabled(self.train_button, "primary")
        self.train_button.on_click(lambda _b: self._train_clicked())
        self.train_message = widgets.HTML()
        self.train_message.add_class("cmlw-train-message")
        self.progress = TrainingProgress(what=info.media_plural, root=self.picker.root)
        self.progress.observe(self._on_trained, "model")
        self.progress.observe(self._on_progress_state, "state")
        self.progress.observe(lambda _ch: self._update_leave_guard(), "state")
        self.form.observe(self._on_form_valid, "valid")
        self.confusion = ConfusionMatrix(root=self.picker.root)
        self.model_summary = widgets.HTML()
        self.model_summary.add_class("cmlw-model-summary")
        self.holdout_note = widgets.HTML()
        self.holdout_button = widgets.Button(description=f"Hold out {HOLDOUT_RATIO:.0%} and train again",
                                             icon="random", layout=widgets.Layout(width="auto"),
                                             tooltip=f"keep {HOLDOUT_RATIO:.0%} of each label's examples out of "
                                                     "training and measure the model on them")
        self.holdout_button.add_class("cmlw-holdout-button")
        self.holdout_button.on_click(lambda _b: self.hold_out_and_train())
        self.holdout_box = widgets.VBox([self.holdout_note, self.holdout_button],
                                        layout=widgets.Layout(display="none"))
        self.holdout_box.add_class("cmlw-holdout")
        self.preview = PredictionPreview(root=self.picker.root, task=info.key)
        preview, picker = self.preview, self.picker
        preview.data_folder = picker.path or ""
        picker.observe(lambda ch: preview.show_data_folder(ch["new"] or ""), "path")
        picker.observe(lambda ch: ch["owner"] is self.picker and self.offer_resume(), "data_source")
        export_step = self._build_export(info)
        self.camera = None  # made when its tab is opened (open_camera)
        self.live = None  # made when the Live tab is opened (open_live)
        self.data_tabs = _lazy_tabs(("Folders & uploads", "Camera"), self.picker, self.open_camera, "cmlw-data-tabs")
        self.preview_tabs = _lazy_tabs(("File", "Live"), self.preview, self.open_live, "cmlw-preview-tabs")
        self.sections = [
            _section(1, "Data", self.data_tabs, css="cmlw-section-data"),
            _section(2, "Parameters", self.form, css="cmlw-section-parameters"),
            _section(3, "Training", widgets.HBox([self.train_button, self.train_message],
                                                 layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
                     self.progress, css="cmlw-section-training"),
            _section(4, "Evaluation", self.holdout_box, self.confusion, self.model_summary,
                     css="cmlw-section-evaluation"),
            _section(5, "Preview", self.preview_tabs, css="cmlw-section-preview"),
            _section(6, "Export", *export_step, css="cmlw-section-export"),
        ]
        self.body.children = self.sections
        no_null_titles(self)
        self.offer_resume()  # a run on this data interrupted in an earlier page or kernel

    def open_camera(self) -> Camera:
        """The Camera of the Data step (saving through the app's picker), made on first use."""
        if self.camera is None:
            self.camera = Camera(self.info.key, picker=self.picker)
        return self.camera

    def open_live(self) -> LivePreview:
        """The Live tab's LivePreview of the trained model, made on first use."""
        if self.live is None:
            self.live = LivePreview(self.model)
        return self.live

    # -- training ------------------------------------------------------------------------------
    def train(self, session_parameters: MLTrainingSessionParameters | None = None) -> MLJob:
        """Start training on the picked data with the form's parameters; returns the MLJob.

        Raises ValueError when the data or the parameters are not usable (and says so in the app).
        """
        if self.job is not None and not self.job.done():
            raise RuntimeError("a training job is already running; cancel it first")
        source = self.picker.data_source
        if source is None:
            problems = [p["message"] for p in self.picker.problems if p["level"] == "error"]
            msg = "choose a folder with labelled training data first" + (f": {problems[0]}" if problems else "")
            self._say(msg, "error")
            raise ValueError(msg)
        try:
            parameters = self.form.parameters
        except InvalidParametersError as err:
            self._say(f"fix the parameters first — {err}", "error")
            raise
        # the session's bound on iterations is what the form asks (Create ML's default of 1000 would cap it)
        asked = getattr(parameters, "max_iterations", getattr(parameters, "maximum_iterations", 1000))
        # one session folder per task and data set: a new page finds it, and Resume continues it there
        sp = session_parameters or _session_parameters(session_folder(self.session_root, self.info.key, source),
                                                       asked)
        task_class = self.info.load()
        self.model = None
        self.export_path = None
        self.download.clear()
        self.export_button.disabled = True
        self.confusion.metrics = None
        self.model_summary.value = ""
        self.holdout_box.layout.display = "none"
        try:  # Train starts over: a session left in the folder (finished or not) is replaced
            opened = task_class.open_training_session(source, parameters, sp, restart=True)
        except CreateMLError as err:  # e.g. another page's run is still using the folder
            self._say(f"cannot start training: {err}", "error")
            raise ValueError(str(err)) from err
        job = task_class.resume(opened.session)
        self.job = job
        self.progress.attach(job)
        self._say(self._training_text(), "info")
        return job

    def offer_resume(self) -> bool:
        """When this task's session folder for the picked data holds a run that stopped before its end (an
        earlier page or kernel, reloaded or gone), show it with Resume enabled; True if one was found."""
        picker, progress = getattr(self, "picker", None), getattr(self, "progress", None)
        if picker is None or progress is None or progress.state in ("running", "cancelling"):
            return False
        if self.job is not None and not self.job.done():
            return False
        source = picker.data_source
        if source is None:
            return False
        folder = session_folder(self.session_root, self.info.key, source)
        followed = progress.job.session if progress.job is not None else progress.stopped_session
        if followed is not None and followed.session_directory == folder:
            return False  # this page shows that session already (its own run, or the one found before)
        session = interrupted_session(self.info.load(), folder)
        if session is None:
            return False
        progress.show_stopped(session)
        kept = ""
        try:  # the form shows what the session was started with
            self.form.set_parameters(session.model_parameters)
        except Exception as err:  # noqa: BLE001 - any reason: said in the message, the found session still shown
            kept = f"; the form keeps its own settings (the session's cannot be shown: {type(err).__name__}: {err})"
        where = (f"iteration {session.iteration} of {iteration_bound(session)}"
                 if session.phase.value == "training" else "feature extraction")
        self._say(f"a training run on this data stopped at {where} (the page was left or the kernel stopped) — "
                  f"Resume continues it, Train starts over{kept}", "info")
        return True

    def _training_text(self) -> str:
        """"training on the 200 images in sign-language-digits/" (what the student picked, in their words)."""
        picker = self.picker
        total = sum(picker.counts.values()) if picker.counts else 0
        where = f"{picker.path}/" if picker.path else "the data folder"
        return f"training on the {total} {self.info.media_plural} in {where}" if total else f"training on {where}"

    def hold_out_and_train(self) -> MLJob:
        """Set the validation data to a fixed 20% of each label (seed 0) and train again; returns the MLJob."""
        from ..data.split import MLSplitStrategy
        from ..data.validation import ValidationData

        self.form.fields["validation"].set_value(ValidationData.split(MLSplitStrategy.fixed(HOLDOUT_RATIO, 0)))
        self.form._validate_all()
        return self.train()

    def _on_form_valid(self, change) -> None:
        if change["new"] and "fix the parameters" in self.train_message.value:
            self._say("")  # the message that asked for the fix is answered

    def _train_clicked(self) -> None:
        try:
            self.train()
        except (ValueError, RuntimeError) as err:
            log.debug("not training: %s", err)
            if not self.train_message.value:
                self._say(str(err), "error")

    def _on_progress_state(self, change) -> None:
        with self._lock:
            if change["owner"] is not self.progress:  # a progress widget of a task switched away from
                return
            self._progress_state_changed(change)

    def _progress_state_changed(self, change) -> None:
        state = change["new"]
        self.train_button.disabled = state in ("running", "cancelling")
        if self.progress.job is not None and self.progress.job is not self.job:
            self.job = self.progress.job  # Resume made a new job
        if state == "failed":
            self._say("training failed; see the message below", "error")
        elif state == "cancelled":
            self._say("cancelled — Resume continues where it stopped", "info")
        elif state == "waiting":
            self._say("the earlier page's run still holds this session: Resume goes on as soon as it stops (its kernel "
                      "stops it when it hears the page was left, else when it is shut down)", "info")
        elif state == "running":
            self._say(self._training_text(), "info")  # a resumed run: no "cancelled" left up
        elif state == "done":
            self._say("done ✔", "ok")

    def page_left(self) -> None:
        """The page showing the app was closed or reloaded. Under Voilà its kernel serves that page only
        and lives on until culled (a reload starts another kernel meanwhile): stop training and free
        everything now, so the two kernels fit the session's memory together. In Jupyter nothing is
        done (the notebook's kernel outlives its tab and redraws the app when reopened)."""
        if not served_by_voila():
            return
        log.info("the page was left: stopping training and freeing the app's memory")
        with self._lock:
            views = [*self._views.values(), {a: getattr(self, a, None) for a in ("progress",)} | {"job": self.job}]
            for view in views:
                for job in (view.get("job"), getattr(view.get("progress"), "job", None)):
                    if job is not None and not job.done():
                        job.cancel()
            self._views.clear()
            self.model = self.job = None
        with contextlib.suppress(Exception):
            release_hand_detector()
        widgets.Widget.close_all()  # the comm registry holds every widget (and through them models, sessions)
        with self._lock:
            for attr in VIEW_ATTRS:  # the notebook's output history still holds the app itself
                setattr(self, attr, None)
        return_freed_memory()

    def _update_leave_guard(self) -> None:
        if self.leave_guard is None:
            return
        progresses = [getattr(self, "progress", None)] + [v.get("progress") for v in self._views.values()]
        self.leave_guard.active = any(p is not None and p.state in ("running", "cancelling") for p in progresses)

    def _on_trained(self, change) -> None:
        model = change["new"]
        with self._lock:
            if model is None or change["owner"] is not self.progress:  # a stale job of another task
                return
            self._show_model(model)

    def _show_model(self, model) -> None:
        self.model = model
        metrics = {}
        if model.validation_metrics.is_valid:
            metrics["Validation"] = model.validation_metrics
        metrics["Training"] = model.training_metrics
        self.confusion.metrics = metrics
        self._show_holdout(model)
        try:
            summary = hide_root(model._repr_html_(), self.picker.root)  # its skipped files: no server paths
            self.model_summary.value = f"<details><summary><b>Model summary</b></summary>{summary}</details>"
        except Exception as err:  # noqa: BLE001 - the summary is a nicety
            log.debug("no model summary: %s", err)
        self.export_button.disabled = False  # with the metrics: the preview's first answer may take a while
        self.preview.model = model
        if self.live is not None:
            self.live.model = model

    def _show_holdout(self, model) -> None:
        """When nothing was held out, say what the accuracy shown means, and offer to hold some out."""
        if model.validation_metrics.is_valid:
            self.holdout_box.layout.display = "none"
            return
        count = model.training_metrics.count if model.training_metrics.is_valid else 0
        try:
            validation = self.form.fields["validation"].value()
            automatic = validation.kind == "split" and validation.strategy.kind == "automatic"
        except Exception:  # noqa: BLE001 - only the wording depends on it
            automatic = False
        why = (f"With fewer than 50 examples ({count} here), Create ML's automatic split keeps every one for "
               "training" if automatic and count < 50 else "Validation data is set to none")
        self.holdout_note.value = (
            "<div class='cmlw-holdout-note'><b>Nothing was held out for validation.</b> "
            f"{html.escape(why)}, so the accuracy below is measured on the same {count} "
            f"{self.info.media_plural} the model learned from: it shows how well it remembers them, not how "
            f"well it does on new ones. Hold some out to find out.</div>")
        self.holdout_box.layout.display = None

    def _say(self, text: str, level: str = "info") -> None:
        picker = getattr(self, "picker", None)
        self.train_message.value = message_html("cmlw-train", text, level, picker.root if picker is not None else None)
