"""TrainingProgress: follow an MLJob live — phase, progress bar, time left, loss/accuracy curves,
checkpoints — with Cancel and Resume.

The job trains on its own thread and calls back from it; the widget updates from there (ipykernel
sends widget messages from any thread) at most every `update_interval` seconds, so training
never waits on the browser and the notebook stays usable.
"""
from __future__ import annotations

import html
import math
import os
import threading
import time
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..session import JobCancelledError, MLPhase, MLProgress
from ._look import style_while_enabled
from ._paths import hide_root
from .charts import LineChart

if TYPE_CHECKING:
    from ..session import MLJob, MLTrainingSession

PHASE_TITLES = {
    "initialized": "Starting",
    "extractingFeatures": "Extracting features",
    "training": "Training",
    "evaluating": "Evaluating",
    "inferencing": "Inferencing",
}
CURVES = (  # (metric key, series name, chart panel (1: loss, 2: accuracy), colour, dash)
    ("loss", "training loss", 1, "#0071e3", None),
    ("validation_loss", "validation loss", 1, "#ff9500", "dot"),
    ("accuracy", "training accuracy", 2, "#0071e3", None),
    ("validation_accuracy", "validation accuracy", 2, "#ff9500", "dot"),
)


def format_duration(seconds: float | None) -> str:
    """Seconds in words: "42 s", "3 min 05 s", "1 h 02 min"; "–" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def iteration_bound(session: MLTrainingSession) -> int:
    """The iteration a run of `session` trains to: its model's bound (max_iterations, maximum_iterations),
    within the session's own `iterations`."""
    from ..tasks.registry import iterations_field

    bound = getattr(session.model_parameters, iterations_field(type(session.model_parameters)))
    return min(int(bound), int(session.parameters.iterations))


class TrainingProgress(widgets.VBox):
    """Shows an MLJob as it runs. `attach(job)` follows a job; `model` is set when it finishes.

    `state`: "idle", "running", "cancelling", "cancelled", "waiting" (Resume of a session another page's run
    still holds), "failed" or "done". `elapsed_time`: seconds
    the session has trained, the runs before a Cancel included when Resume continues it here. `root`
    (optional): the data folder, left out of the paths an error message shows.
    """

    state = traitlets.Unicode("idle")
    phase = traitlets.Unicode("")
    item_count = traitlets.Int(0)
    total_item_count = traitlets.Int(0)
    time_left = traitlets.Float(float("nan"))
    elapsed_time = traitlets.Float(0.0)
    error = traitlets.Unicode("")
    model = traitlets.Any(None, allow_none=True)
    job = traitlets.Any(None, allow_none=True)

    def __init__(self, job: MLJob | None = None, update_interval: float = 0.3, what: str = "items",
                 root: str | os.PathLike | None = None, **kwargs: object):
        self.update_interval = update_interval
        self.what = what
        self.root = root
        self._elapsed_before = 0.0  # seconds of the earlier runs (stopped jobs) of the session followed now
        self.stopped_session = None  # a session found stopped on disk (show_stopped): what Resume continues
        self.resume_wait_s = 300.0  # how long Resume waits for another page's run to free that session's folder
        self.history: list[dict] = []  # {"iteration": n, metric: value, ...}
        self.checkpoints: list = []
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._last_flush = 0.0
        self._progress = None
        self._phase_mark: tuple[float, int] | None = None  # (monotonic time, count) where estimates start
        self._finished = threading.Event()
        self._finished.set()

        self.phase_label = widgets.HTML("<b>Not started</b>")
        self.phase_label.add_class("cmlw-progress-phase")
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                         layout=widgets.Layout(width="420px"))
        self.bar.add_class("cmlw-progress-bar")
        self.counts_label = widgets.HTML()
        self.counts_label.add_class("cmlw-progress-counts")
        self.metrics_label = widgets.HTML()
        self.metrics_label.add_class("cmlw-progress-metrics")
        self.error_label = widgets.HTML()
        self.error_label.add_class("cmlw-progress-error")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            disabled=True, tooltip="stop after the current step; Resume continues")
        self.cancel_button.add_class("cmlw-cancel-button")
        style_while_enabled(self.cancel_button, "warning")
        self.resume_button = widgets.Button(description="Resume", icon="play", disabled=True,
                                            tooltip="continue the cancelled session where it stopped")
        self.resume_button.add_class("cmlw-resume-button")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.resume_button.on_click(lambda _b: self.resume())
        self.checkpoints_html = widgets.HTML()
        self.checkpoints_html.add_class("cmlw-checkpoints")
        self.chart = self._make_chart()
        chart = self.chart
        chart.add_class("cmlw-progress-chart")
        super().__init__(children=[
            self.phase_label,
            widgets.HBox([self.bar, self.counts_label], layout=widgets.Layout(align_items="center")),
            self.metrics_label, self.error_label,
            widgets.HBox([self.cancel_button, self.resume_button]),
            chart, self.checkpoints_html,
        ], **kwargs)
        self.add_class("cmlw-training-progress")
        if job is not None:
            self.attach(job)

    # -- the chart ---------------------------------------------------------------------------
    def _make_chart(self) -> LineChart:
        """Loss and accuracy per iteration, side by side (an SVG chart of our own: no plotly.js)."""
        return LineChart(
            panels=[{"title": "Loss", "min": 0}, {"title": "Accuracy", "percent": True, "min": 0, "max": 1}],
            series=[{"key": key, "name": name, "panel": col - 1, "color": color, "dash": bool(dash)}
                    for key, name, col, color, dash in CURVES])

    def _repr_mimebundle_(self, **kwargs):
        """Beside the widget: the status and the curves as static HTML/SVG, what nbconvert and GitHub show."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/html"] = (f"<div class='cmlw-training-progress-static'>{self.phase_label.value}"
                                   f"<div>{self.counts_label.value}</div><div>{self.metrics_label.value}</div>"
                                   f"{self.chart.to_html()}</div>")
        return bundle

    # -- following a job ---------------------------------------------------------------------
    def attach(self, job: MLJob, *, elapsed_before: float | None = None) -> None:
        """Follow `job` (an MLJob): its past history is drawn at once, new events as they come.

        elapsed_before: seconds the session's earlier runs took, counted into the time shown (by
        default those of the runs this widget followed)."""
        with self._lock:
            previous = self.job
            if elapsed_before is not None:
                self._elapsed_before = float(elapsed_before)
            elif previous is None or previous.session is not job.session:
                self._elapsed_before = 0.0
            elif previous is not job and previous.done():  # Resume: the new run adds to the earlier ones
                self._elapsed_before += previous.progress.elapsed_time
            self.job = job
            self.stopped_session = None
            self.model = None
            self.error = ""
            self.history = [dict(h) for h in getattr(job.session, "history", [])]
            self.checkpoints = list(getattr(job.session, "checkpoints", []))
            self._progress = job.progress
            self._phase_mark = None
            self.state = "running"
            self._finished.clear()
        job.on_phase(lambda phase, j=job: self._on_phase(j, phase))
        job.on_progress(lambda p, j=job: self._on_progress(j, p))
        job.on_checkpoint(lambda c, j=job: self._on_checkpoint(j, c))
        job.add_done_callback(self._on_done)
        self._flush()

    def show_stopped(self, session: MLTrainingSession) -> None:
        """Show `session`, which stopped before its last iteration in an earlier page or kernel (found in its
        folder on disk), as cancelled: its curve, its checkpoints, where it stopped; Resume continues it."""
        with self._lock:
            self.job = None
            self.stopped_session = session
            self._elapsed_before = 0.0
            self.model = None
            self.error = ""
            self.history = [dict(h) for h in session.history]
            self.checkpoints = list(session.checkpoints)
            self.phase = session.phase.value
            training = session.phase == MLPhase.TRAINING
            total = iteration_bound(session) if training else 0
            last = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "iteration"}
            elapsed = session.elapsed_seconds  # every run of it, as recorded at each save
            self._progress = MLProgress(session.phase, session.iteration, total, elapsed, last) if training else None
            self._phase_mark = None
            self.state = "cancelled"
            self._finished.set()
        self._flush()
        self._keep_points_in_saved_state()  # a page drawn after the points went out as messages starts from these

    def detach(self) -> None:
        """Stop following the job (it keeps running); the widget keeps what it showed."""
        with self._lock:
            self.job = None
            if self.state in ("running", "cancelling"):
                self.state = "idle"
            self._finished.set()
        self._flush()

    def _on_phase(self, job, phase) -> None:
        if job is not self.job:
            return
        with self._lock:
            self.phase = str(phase.value if isinstance(phase, MLPhase) else phase)
            start = job.session.iteration if self.phase == MLPhase.TRAINING.value else 0
            self._phase_mark = (time.monotonic(), start)
        self._flush()

    def _on_progress(self, job, progress) -> None:
        if job is not self.job:
            return
        with self._lock:
            self._progress = progress
            if progress.phase == MLPhase.TRAINING and progress.metrics:
                row = {"iteration": progress.item_count, **{str(k): float(v) for k, v in progress.metrics.items()}}
                if self.history and self.history[-1]["iteration"] >= row["iteration"]:
                    self.history = [h for h in self.history if h["iteration"] < row["iteration"]]
                self.history.append(row)
        self._schedule()

    def _on_checkpoint(self, job, checkpoint) -> None:
        if job is not self.job:
            return
        with self._lock:
            self.checkpoints.append(checkpoint)
        self._schedule()

    def _on_done(self, job) -> None:
        if job is not self.job:
            return
        err = job.exception()
        with self._lock:
            if err is None:
                model = job.result()
                self.state = "done"
            else:
                model = None
                if isinstance(err, JobCancelledError):
                    self.state = "cancelled"
                    self.error = ""
                else:
                    self.state = "failed"
                    self.error = f"{type(err).__name__}: {err}"
            self.checkpoints = list(job.session.checkpoints)
        self._flush()
        self._keep_points_in_saved_state()
        self.model = model  # last: observers (the app) see a finished widget
        self._finished.set()

    # -- control -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop at its next step (its session keeps the work for Resume)."""
        with self._lock:  # _on_done takes it too: a job finishing now cannot leave "cancelling" behind
            job = self.job
            if job is None or job.done() or self.state != "running":
                return
            job.cancel()
            self.state = "cancelling"
        self._flush()

    def resume(self) -> MLJob:
        """Continue the cancelled (or failed) session with `Task.resume(session)`; returns the new job."""
        job = self.job
        if job is None and self.stopped_session is not None:  # stopped in an earlier page or kernel
            return self._resume_stopped(self.stopped_session)
        if job is None or not job.done():
            raise RuntimeError("there is no stopped training job to resume")
        session = job.session
        new_job = session.task.resume(session)
        self.attach(new_job)
        return new_job

    def _resume_stopped(self, session):
        """Resume a session found on disk. While the earlier page's run still holds its folder, wait (state
        "waiting", up to `resume_wait_s`) on a thread, then continue the session as that run left it;
        returns the new job, or None when it waits."""
        from ._sessions import folder_busy

        folder = session.session_directory
        if not folder_busy(folder):
            fresh = session.task.restore_training_session(session.parameters)
            return self._attach_resumed(fresh, session.task.resume)
        with self._lock:
            self.state = "waiting"
            self._finished.clear()
        self._flush()

        def wait_then_resume():
            deadline = time.monotonic() + self.resume_wait_s
            while folder_busy(folder) and time.monotonic() < deadline and self.state == "waiting":
                time.sleep(0.5)
            if self.state != "waiting":
                return  # something else was started meanwhile
            try:
                fresh = session.task.restore_training_session(session.parameters)  # as the other run left it
                self._attach_resumed(fresh, session.task.resume)
            except Exception as err:  # noqa: BLE001 - shown in the widget
                with self._lock:
                    self.state, self.error = "failed", f"{type(err).__name__}: {err}"
                    self._finished.set()
                self._flush()

        threading.Thread(target=wait_then_resume, name="cmlw-resume-wait", daemon=True).start()
        return None

    def _attach_resumed(self, session, resume):
        """Follow resume(session), counting the seconds its earlier runs took (read before it starts)."""
        earlier = session.elapsed_seconds
        job = resume(session)
        self.attach(job, elapsed_before=earlier)
        return job

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job followed now is finished and shown; True if it is."""
        return self._finished.wait(timeout)

    # -- drawing -----------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Flush now, or once `update_interval` has passed since the last flush."""
        with self._lock:
            wait = self._last_flush + self.update_interval - time.monotonic()
            if wait <= 0:
                pass
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()
                return
            else:
                return
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last_flush = time.monotonic()
            self._draw_status()
            self._draw_chart()
            self._draw_checkpoints()

    def _estimate_left(self, p) -> float:
        if p is None or not p.total_item_count or p.phase.value != self.phase or self._phase_mark is None:
            return float("nan")
        t0, c0 = self._phase_mark
        done = p.item_count - c0
        if done <= 0:
            return float("nan")
        rate = done / max(time.monotonic() - t0, 1e-6)
        return max(0.0, (p.total_item_count - p.item_count) / rate)

    def _draw_status(self) -> None:
        p = self._progress
        phase = self.phase or (p.phase.value if p is not None else "")
        # A finished run ends in its evaluation; it reads as finished training, not as "Evaluating".
        title = "Training" if self.state == "done" else PHASE_TITLES.get(phase, phase or "Not started")
        state_note = {"cancelling": " — cancelling…", "cancelled": " — cancelled (Resume continues)",
                      "waiting": " — waiting for the earlier page's run to stop, then resuming…",
                      "failed": " — failed", "done": " — done"}.get(self.state, "")
        self.phase_label.value = (f"<b class='cmlw-phase-{html.escape(phase or 'none')}'>{html.escape(title)}</b>"
                                  f"<span class='cmlw-state-{self.state}'>{html.escape(state_note)}</span>")
        if p is not None and p.total_item_count:
            frac = min(1.0, p.item_count / p.total_item_count)
            self.bar.value = frac
            self.item_count, self.total_item_count = int(p.item_count), int(p.total_item_count)
            unit = "iterations" if p.phase in (MLPhase.TRAINING, MLPhase.EVALUATING) else self.what
            left = self._estimate_left(p) if self.state == "running" else float("nan")
            self.time_left = left
            left_text = f" · about {format_duration(left)} left" if math.isfinite(left) else ""
            self.elapsed_time = self._elapsed_before + p.elapsed_time
            self.counts_label.value = (f"{p.item_count} / {p.total_item_count} {unit} · "
                                       f"{format_duration(self.elapsed_time)} elapsed{left_text}")
        elif p is None:
            self.bar.value = 0.0
            self.counts_label.value = ""
        self.bar.bar_style = {"done": "success", "failed": "danger", "cancelled": "warning",
                              "cancelling": "warning"}.get(self.state, "info")
        if self.state == "done":
            self.bar.value = 1.0
        last = self.history[-1] if self.history else {}
        parts = []
        for key, name, _col, _c, _d in CURVES:
            if key in last:
                value = last[key]
                parts.append(f"{name} <b>{value:.1%}</b>" if "accuracy" in key else f"{name} <b>{value:.4f}</b>")
        self.metrics_label.value = " · ".join(parts)
        self.error_label.value = (f"<span class='cmlw-error' style='color:#c62828'>Training failed: "
                                  f"{html.escape(hide_root(self.error, self.root))}</span>" if self.error else "")
        running = self.state == "running"
        self.cancel_button.disabled = not running
        self.resume_button.disabled = (self.state not in ("cancelled", "failed")
                                       or (self.job is None and self.stopped_session is None))

    def _draw_chart(self) -> None:
        """Send the chart the points it lacks (a small message); the whole series only when the history
        was rewritten (another job followed, or a Resume that went back)."""
        rows = list(self.history)
        self.chart.plot({key: [(r["iteration"], r[key]) for r in rows if key in r] for key, *_ in CURVES})

    def _keep_points_in_saved_state(self) -> None:
        """New points reach the browser as messages, which a saved notebook (or a second view of the
        widget) never replays: once a run has ended, the chart's synced state holds them all."""
        with self._lock:
            self.chart.sync()

    def _draw_checkpoints(self) -> None:
        cps = self.checkpoints
        if not cps:
            self.checkpoints_html.value = ""
            return
        body = "".join(
            f"<tr><td>{html.escape(PHASE_TITLES.get(c.phase.value, c.phase.value))}</td><td style='text-align:right'>"
            f"{c.iteration}</td><td>{c.date.strftime('%H:%M:%S')}</td><td>"
            + html.escape(", ".join(f"{k} {v:.3f}" for k, v in c.metrics.items())) + "</td></tr>"
            for c in cps[-8:])
        self.checkpoints_html.value = (
            f"<details class='cmlw-checkpoint-list'><summary>Checkpoints ({len(cps)})</summary>"
            "<table style='border-collapse:collapse;font-size:12px'><tr><th>phase</th><th>iteration</th>"
            f"<th>time</th><th>metrics</th></tr>{body}</table></details>")
