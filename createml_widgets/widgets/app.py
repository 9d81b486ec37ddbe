"""TrainerApp: Create ML's training window as one widget — data, parameters, training, evaluation,
preview and export — for one task (switchable), starting on the bundled sample so it is ready to train.

It composes the five widgets and calls the library; it holds no training logic of its own.
"""
from __future__ import annotations

import base64
import html
import importlib.util
import logging
import tempfile
import threading
from pathlib import Path

import ipywidgets as widgets
import traitlets

from ..session import MLTrainingSessionParameters
from ._look import style_while_enabled
from ._paths import hide_root, sanitize_filename
from ._tasks import TASKS, task_info
from .camera import Camera, LivePreview
from .confusion_matrix import ConfusionMatrix
from .data_source_picker import DataSourcePicker
from .parameter_form import InvalidParametersError, ParameterForm
from .prediction_preview import PredictionPreview
from .training_progress import TrainingProgress

log = logging.getLogger(__name__)
STYLE = (Path(__file__).with_name("style.css"))
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024


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


class TrainerApp(widgets.VBox):
    """Train, evaluate, try and export a Create ML model from a dashboard.

    >>> TrainerApp()                                  # doctest: +SKIP  (image classifier, bundled sample)
    >>> TrainerApp("hand_pose", root="~/my-data")     # doctest: +SKIP

    `root` (where data is browsed and uploads are saved) defaults to `$CREATEML_WIDGETS_DATA_ROOT`,
    else the bundled samples folder.
    """

    task = traitlets.Unicode("image")
    model = traitlets.Any(None, allow_none=True)
    job = traitlets.Any(None, allow_none=True)
    export_path = traitlets.Any(None, allow_none=True)

    def __init__(self, task: str = "image", root=None, **kwargs):
        self.root = Path(root).expanduser().resolve() if root is not None else None
        self._lock = threading.RLock()
        tasks = available_tasks()
        info = task_info(task)
        self.task_select = widgets.ToggleButtons(
            options=[(TASKS[k].title, k) for k in tasks], value=info.key if info.key in tasks else None,
            style={"button_width": "170px"})
        self.task_select.add_class("cmlw-task-select")
        self.title = widgets.HTML()
        self.body = widgets.VBox()
        super().__init__(children=[widgets.HTML(_style_html()), self.title, self.task_select, self.body],
                         **kwargs)
        self.add_class("cmlw-app")
        self.task_select.observe(lambda ch: setattr(self, "task", ch["new"]), "value")
        self.task = info.key
        if self.task == "image" and not self.body.children:  # the trait did not change: build now
            self._build()

    # -- building ------------------------------------------------------------------------------
    @traitlets.observe("task")
    def _on_task(self, change) -> None:
        if self.task_select.value != change["new"]:
            self.task_select.value = change["new"]
        job = self.job
        if job is not None and not job.done():
            job.cancel()
        self._build()

    def _build(self) -> None:
        old = getattr(self, "progress", None)
        if old is not None:  # the previous task's run ends on its own thread: its events must not reach us
            old.unobserve(self._on_trained, "model")
            old.unobserve(self._on_progress_state, "state")
            old.detach()
        old_live = getattr(self, "live", None)
        if old_live is not None:  # frees the previous task's MediaPipe graphs
            old_live.model = None
        info = task_info(self.task)
        self.info = info
        self.model = None
        self.job = None
        self.export_path = None
        self.title.value = (f"<div class='cmlw-app-title'>Create ML · {html.escape(info.title)}</div>"
                            f"<div class='cmlw-app-subtitle'>{html.escape(info.class_name)} — choose data, "
                            "set parameters, train, look at the mistakes, try it, export it.</div>")
        try:
            self.picker = DataSourcePicker(info.key, root=self.root)
            self.form = ParameterForm(info.key)
        except ImportError as err:
            self.body.children = [widgets.HTML(f"<div class='cmlw-error' style='color:#c62828'>"
                                               f"{html.escape(str(err))}</div>")]
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
        self.confusion = ConfusionMatrix(root=self.picker.root)
        self.model_summary = widgets.HTML()
        self.model_summary.add_class("cmlw-model-summary")
        self.preview = PredictionPreview(root=self.picker.root, task=info.key)
        self.export_name = widgets.Text(value=f"{info.class_name.removeprefix('ML')}.mlmodel",
                                        description="File name", layout=widgets.Layout(width="340px"))
        self.export_name.add_class("cmlw-export-name")
        self.export_button = widgets.Button(description="Export Core ML model", icon="download", disabled=True,
                                            layout=widgets.Layout(width="auto"))  # the default width cuts the label
        self.export_button.add_class("cmlw-export-button")
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.download = widgets.HTML()
        self.download.add_class("cmlw-download-link")
        self.camera = None  # made when its tab is opened (open_camera)
        self.live = None  # made when the Live tab is opened (open_live)
        self.data_tabs = _lazy_tabs(("Folders & uploads", "Camera"), self.picker, self.open_camera, "cmlw-data-tabs")
        self.preview_tabs = _lazy_tabs(("File", "Live"), self.preview, self.open_live, "cmlw-preview-tabs")
        self.body.children = [
            _section(1, "Data", self.data_tabs, css="cmlw-section-data"),
            _section(2, "Parameters", self.form, css="cmlw-section-parameters"),
            _section(3, "Training", widgets.HBox([self.train_button, self.train_message],
                                                 layout=widgets.Layout(align_items="center")),
                     self.progress, css="cmlw-section-training"),
            _section(4, "Evaluation", self.confusion, self.model_summary, css="cmlw-section-evaluation"),
            _section(5, "Preview", self.preview_tabs, css="cmlw-section-preview"),
            _section(6, "Export", widgets.HBox([self.export_name, self.export_button]), self.download,
                     css="cmlw-section-export"),
        ]

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
    def train(self, session_parameters: MLTrainingSessionParameters | None = None):
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
        sp = session_parameters or MLTrainingSessionParameters(report_interval=1, checkpoint_interval=10)
        task_class = self.info.load()
        self.model = None
        self.export_path = None
        self.download.value = ""
        self.export_button.disabled = True
        self.confusion.metrics = None
        self.model_summary.value = ""
        job = task_class.train(source, parameters, sp)
        self.job = job
        self.progress.attach(job)
        self._say(f"training on {getattr(source, 'description', source)}", "info")
        return job

    def _train_clicked(self) -> None:
        try:
            self.train()
        except (ValueError, RuntimeError) as err:
            log.debug("not training: %s", err)
            if not self.train_message.value:
                self._say(str(err), "error")

    def _on_progress_state(self, change) -> None:
        if change["owner"] is not self.progress:  # a progress widget of a task switched away from
            return
        state = change["new"]
        self.train_button.disabled = state in ("running", "cancelling")
        if self.progress.job is not None and self.progress.job is not self.job:
            self.job = self.progress.job  # Resume made a new job
        if state == "failed":
            self._say("training failed; see the message below", "error")
        elif state == "cancelled":
            self._say("cancelled — Resume continues where it stopped", "info")
        elif state == "done":
            self._say("done ✔", "ok")

    def _on_trained(self, change) -> None:
        model = change["new"]
        if model is None or change["owner"] is not self.progress:  # a stale job of another task
            return
        self.model = model
        metrics = {}
        if model.validation_metrics.is_valid:
            metrics["Validation"] = model.validation_metrics
        metrics["Training"] = model.training_metrics
        self.confusion.metrics = metrics
        try:
            summary = hide_root(model._repr_html_(), self.picker.root)  # its skipped files: no server paths
            self.model_summary.value = f"<details><summary><b>Model summary</b></summary>{summary}</details>"
        except Exception as err:  # noqa: BLE001 - the summary is a nicety
            log.debug("no model summary: %s", err)
        self.preview.model = model
        if self.live is not None:
            self.live.model = model
        self.export_button.disabled = False

    # -- export --------------------------------------------------------------------------------
    def export(self, directory=None) -> Path:
        """Write the model as Core ML (`model.write`) and offer it as a download link; returns the file."""
        if self.model is None:
            raise RuntimeError("train a model before exporting it")
        name = sanitize_filename(self.export_name.value.strip() or "Classifier.mlmodel")
        if not name.lower().endswith(".mlmodel"):
            name = f"{name.rsplit('.', 1)[0] if '.' in name else name}.mlmodel"
        folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="cmlw-export-"))
        path = self.model.write(folder / name)
        self.export_path = Path(path)
        size = self.export_path.stat().st_size
        if size > MAX_DOWNLOAD_BYTES:
            self.download.value = (f"<span>Written to <code>{html.escape(str(path))}</code> "
                                   f"({size / 1e6:.1f} MB, too large to offer as a download here)</span>")
            return self.export_path
        data = base64.b64encode(self.export_path.read_bytes()).decode("ascii")
        self.download.value = (f"<a class='cmlw-download' download='{html.escape(name)}' "
                               f"href='data:application/octet-stream;base64,{data}'>⬇ Download {html.escape(name)}"
                               f"</a> <span style='color:#6e6e73'>{size / 1e6:.1f} MB</span>")
        return self.export_path

    def _export_clicked(self) -> None:
        self.export_button.disabled = True
        self.download.value = "<span class='cmlw-exporting'>Writing the Core ML model…</span>"

        def run():
            try:
                self.export()
            except Exception as err:  # noqa: BLE001 - shown in the app
                self.download.value = (f"<span class='cmlw-error' style='color:#c62828'>Export failed: "
                                       f"{html.escape(f'{type(err).__name__}: {err}')}</span>")
            finally:
                self.export_button.disabled = self.model is None

        threading.Thread(target=run, name="cmlw-export", daemon=True).start()

    def _say(self, text: str, level: str = "info") -> None:
        color = {"error": "#c62828", "ok": "#1a7f37"}.get(level, "#6e6e73")
        picker = getattr(self, "picker", None)
        text = hide_root(text, picker.root if picker is not None else None)  # no server paths on the page
        self.train_message.value = (f"<span class='cmlw-train-{level}' style='color:{color}'>{html.escape(text)}</span>"
                                    if text else "")
