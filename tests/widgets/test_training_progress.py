"""TrainingProgress on real training jobs: phase, bar, counts, time left, live curves, checkpoints,
Cancel and Resume, failures — all updated from the training thread while the caller goes on."""
from __future__ import annotations

import itertools
import math
import re
import threading
import time

import pytest
from widget_helpers import copy_photos

from createml_widgets import MLImageClassifier, MLSplitStrategy, ValidationData
from createml_widgets.session import JobCancelledError, MLJob, MLPhase, MLTrainingSessionParameters
from createml_widgets.widgets import TrainingProgress
from createml_widgets.widgets.training_progress import format_duration

IC = MLImageClassifier
TIMEOUT = 180


def params(iterations: int, mlp: bool = False, validation=None):
    algorithm = IC.ModelAlgorithmType.transfer_learning(
        classifier=IC.ClassifierType.multilayer_perceptron([16]) if mlp else None)
    return IC.ModelParameters(max_iterations=iterations, algorithm=algorithm,
                              validation=validation or ValidationData.split(MLSplitStrategy.fixed(0.34, 0)))


def unstarted_job(source, parameters, report=1, checkpoint=100) -> MLJob:
    """A real job of the engine, not started yet, so callbacks can be in place before its first step."""
    session = IC.make_training_session(source, parameters,
                                       MLTrainingSessionParameters(report_interval=report, checkpoint_interval=checkpoint))
    return MLJob(session)


def text(html_widget) -> str:
    """What a browser shows of an HTML widget: its text, without the tags."""
    return re.sub(r"<[^>]+>", "", html_widget.value)


def curves(widget) -> dict[str, tuple[list, list]]:
    """The chart's series: {metric key: (iterations, values)}."""
    return {key: ([x for x, _ in pts], [y for _, y in pts]) for key, pts in widget.chart.data.items()}


def record_messages(widget) -> list[dict]:
    """Every message the widget's comm sends to the browser, as sent (state updates and custom ones)."""
    sent = []
    send = widget.comm.send

    def recording(data=None, metadata=None, buffers=None):
        sent.append(data)
        return send(data=data, metadata=metadata, buffers=buffers)

    widget.comm.send = recording
    return sent


@pytest.fixture()
def source(image_root):
    return IC.DataSource.labeled_directories(image_root / "digits")


def test_follows_a_real_job_to_the_end(source):
    progress = TrainingProgress(update_interval=0)
    assert progress.state == "idle" and progress.cancel_button.disabled and progress.resume_button.disabled
    states, seen_left, threads = [], [], set()
    progress.observe(lambda ch: states.append(ch["new"]), "state")
    job = IC.train(source, params(8), MLTrainingSessionParameters(report_interval=1, checkpoint_interval=3))
    progress.attach(job)
    # The widget draws each report from the training thread; the caller's thread is free meanwhile.
    job.on_progress(lambda p: threads.add(threading.current_thread().name))
    job.on_progress(lambda p: seen_left.append((p.phase, progress.time_left, progress.counts_label.value)))
    model = job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)

    assert states == ["running", "done"] and progress.model is model
    assert threads and threading.current_thread().name not in threads
    assert progress.phase == MLPhase.EVALUATING.value and "done" in progress.phase_label.value
    # The run ended in its evaluation, but it reads as finished training, as the state says.
    assert text(progress.phase_label) == "Training — done"
    assert "cmlw-state-done" in progress.phase_label.value  # the class the browser test waits for
    assert progress.bar.value == 1.0 and progress.bar.bar_style == "success"
    assert (progress.item_count, progress.total_item_count) == (8, 8)
    assert progress.counts_label.value.startswith("8 / 8 iterations")
    training = [(left, text) for phase, left, text in seen_left if phase == MLPhase.TRAINING]
    assert any(math.isfinite(left) and left >= 0 and "left" in text for left, text in training[1:-1])

    history = job.session.history
    assert [h["iteration"] for h in history] == list(range(1, 9))
    drawn = curves(progress)
    for key in ("loss", "accuracy", "validation_loss", "validation_accuracy"):
        assert drawn[key] == ([h["iteration"] for h in history], [pytest.approx(h[key]) for h in history]), key
    assert f"validation accuracy <b>{history[-1]['validation_accuracy']:.1%}</b>" in progress.metrics_label.value

    assert progress.checkpoints == job.session.checkpoints
    assert [c.iteration for c in progress.checkpoints if c.phase == MLPhase.TRAINING] == [3, 6, 8]
    assert f"Checkpoints ({len(job.session.checkpoints)})" in progress.checkpoints_html.value
    assert progress.cancel_button.disabled and progress.resume_button.disabled

    late = TrainingProgress(job)  # a widget made after the job finished shows all of it at once
    assert late.wait(5) and late.state == "done" and late.model is model and curves(late) == drawn


def test_cancel_then_resume_continues_where_it_stopped(source):
    progress = TrainingProgress(update_interval=0)
    states = []
    progress.observe(lambda ch: states.append(ch["new"]), "state")
    job = unstarted_job(source, params(30, mlp=True))
    progress.attach(job)
    job.on_progress(lambda p: p.phase == MLPhase.TRAINING and p.item_count == 3 and progress.cancel_button.click())
    job._start()
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    assert states == ["running", "cancelling", "cancelled"] and progress.model is None and progress.error == ""
    assert job.session.iteration == 3 and progress.phase == "training"
    assert "cancelled (Resume continues)" in progress.phase_label.value
    assert progress.cancel_button.disabled and not progress.resume_button.disabled
    assert curves(progress)["loss"][0] == [1, 2, 3]
    assert [c.iteration for c in progress.checkpoints if c.phase == MLPhase.TRAINING] == [3]

    progress.resume_button.click()
    resumed = progress.job
    assert resumed is not job and resumed.session is job.session
    model = resumed.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    assert states[-2:] == ["running", "done"] and progress.model is model and model._iterations == 30
    x, _ = curves(progress)["loss"]
    assert x == list(range(1, 31))  # one curve across the pause: no gap, no repeated iteration
    assert progress.resume_button.disabled


def test_elapsed_time_counts_the_run_before_the_cancel(source):
    """After Cancel and Resume the time elapsed is the session's: the first run's time is not lost."""
    progress = TrainingProgress(update_interval=0)
    job = unstarted_job(source, params(12, mlp=True))
    progress.attach(job)
    slow = MLPhase.TRAINING  # the first run takes a while: each of its reports waits 0.8 s
    job.on_progress(lambda p: p.phase == slow and time.sleep(0.8))
    job.on_progress(lambda p: p.phase == slow and p.item_count == 3 and progress.cancel_button.click())
    job._start()
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT) and progress.state == "cancelled"
    first = job.progress.elapsed_time
    assert first >= 1.6 and f"{format_duration(first)} elapsed" in progress.counts_label.value

    resumed = progress.resume()
    resumed.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT) and progress.state == "done"
    second = resumed.progress.elapsed_time
    assert format_duration(first + second) != format_duration(second)  # what was shown before: the 2nd run only
    assert progress.counts_label.value == f"12 / 12 iterations · {format_duration(first + second)} elapsed"
    assert progress.elapsed_time == pytest.approx(first + second)

    other = unstarted_job(source, params(2))  # another session starts from 0 again
    progress.attach(other)
    other._start().result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT) and progress.elapsed_time == pytest.approx(other.progress.elapsed_time)


def test_a_session_reopened_from_disk_shows_the_time_its_runs_took(source, tmp_path):
    """A page reloaded after a Cancel (a new widget, the session read back from its folder) showed
    "0 s elapsed": the time is now kept in the session and counted on after Resume."""
    sp = MLTrainingSessionParameters(tmp_path / "session", report_interval=1, checkpoint_interval=1)
    job = MLJob(IC.make_training_session(source, params(8, mlp=True), sp))
    job.on_progress(lambda p: p.phase == MLPhase.TRAINING and time.sleep(0.6))
    job.on_progress(lambda p: p.phase == MLPhase.TRAINING and p.item_count == 3 and job.cancel())
    job._start()
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)
    first = job.progress.elapsed_time
    assert first >= 1.2

    reopened = IC.restore_training_session(MLTrainingSessionParameters(tmp_path / "session"))
    recorded = reopened.summary["elapsed_seconds"]
    # saved at the cancel's checkpoint: the whole run, a little past its last report
    assert first <= recorded <= first + 3.0, (recorded, first)
    page = TrainingProgress(update_interval=0)
    page.show_stopped(reopened)
    assert f"3 / 8 iterations · {format_duration(recorded)} elapsed" == page.counts_label.value
    assert format_duration(recorded) != format_duration(0.0)

    resumed = page.resume()
    resumed.result(timeout=TIMEOUT)
    assert page.wait(TIMEOUT) and page.state == "done"
    assert page.elapsed_time == pytest.approx(recorded + resumed.progress.elapsed_time)
    again = IC.restore_training_session(MLTrainingSessionParameters(tmp_path / "session"))
    assert again.summary["elapsed_seconds"] >= recorded + resumed.progress.elapsed_time - 0.5
    for edited in (None, "an hour", float("nan"), -3):  # a session.json edited by hand reads as no time
        again.summary["elapsed_seconds"] = edited
        assert again.elapsed_seconds == 0.0


def looks(button) -> tuple[bool, str, bool]:
    return button.disabled, button.button_style, "cmlw-button-disabled" in button._dom_classes


def test_disabled_buttons_look_disabled(source):
    """Jupyter only fades a disabled button, so an orange Cancel looked clickable: disabled, it is plain."""
    progress = TrainingProgress(update_interval=0)
    assert looks(progress.cancel_button) == (True, "", True)
    assert "cmlw-cancel-button" in progress.cancel_button._dom_classes  # the class the browser test uses
    seen = []
    job = unstarted_job(source, params(4))
    progress.attach(job)
    assert looks(progress.cancel_button) == (False, "warning", False)  # while it runs: orange, clickable
    job.on_progress(lambda p: seen.append(looks(progress.cancel_button)))
    job._start()
    job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT) and progress.state == "done"
    assert (False, "warning", False) in seen
    assert looks(progress.cancel_button) == (True, "", True)


def test_cancel_is_refused_when_nothing_runs(source):
    progress = TrainingProgress()
    progress.cancel()  # no job: nothing happens
    assert progress.state == "idle"
    with pytest.raises(RuntimeError, match="no stopped training job"):
        progress.resume()


def test_a_failed_job_shows_the_error_and_can_be_resumed(tmp_path):
    folder = copy_photos(tmp_path / "d", labels=("0", "1"), per_label=3)
    (folder / "broken").mkdir()
    for i in range(3):
        (folder / "broken" / f"{i}.jpg").write_bytes(b"not a photo, only its name says so" * (i + 1))
    job = IC.train(IC.DataSource.labeled_directories(folder), params(3, validation=ValidationData.none()))
    progress = TrainingProgress(job, root=tmp_path)
    with pytest.raises(Exception, match="no readable image"):
        job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    assert progress.state == "failed" and progress.model is None
    assert "DataSourceError" in progress.error and "broken" in progress.error
    assert "Training failed" in progress.error_label.value and progress.bar.bar_style == "danger"
    # The library's message names the folder on the server; the page names it inside the data root.
    assert str(folder) in progress.error
    assert str(tmp_path) not in progress.error_label.value and "d/broken" in progress.error_label.value
    assert not progress.resume_button.disabled and progress.cancel_button.disabled


def test_only_the_job_followed_now_is_shown(source):
    progress = TrainingProgress(update_interval=0)
    first, second = unstarted_job(source, params(5)), unstarted_job(source, params(7))
    progress.attach(first)
    progress.attach(second)  # the user started another run: the first one's events are ignored
    first._start()
    second._start()
    first.result(timeout=TIMEOUT)
    model = second.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    assert progress.model is model and progress.job is second
    assert curves(progress)["loss"][0] == list(range(1, 8))
    progress.detach()
    assert progress.job is None and curves(progress)["loss"][0] == list(range(1, 8))


def test_format_duration():
    assert [format_duration(s) for s in (None, float("nan"), 0, 4.4, 59.6, 61, 3599, 3600, 7322)] == [
        "–", "–", "0 s", "4 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 00 min", "2 h 02 min"]


def test_a_saved_notebook_keeps_the_curves(source):
    """The points reach the browser as update messages; the widget's saved state must hold them too
    (what a saved notebook, or the widget drawn again, shows)."""
    progress = TrainingProgress(update_interval=0)
    job = IC.train(source, params(5), MLTrainingSessionParameters(report_interval=1))
    progress.attach(job)
    job.result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    saved = progress.chart.get_state()["points"]
    assert [x for x, _ in saved["loss"]] == [1, 2, 3, 4, 5]
    assert [y for _, y in saved["accuracy"]] == pytest.approx([h["accuracy"] for h in job.session.history])
    # Where widgets are not drawn (nbconvert to HTML, GitHub): the curves as a static SVG.
    html_view = progress.chart._repr_mimebundle_()[0]["text/html"]
    assert html_view.count("<polyline") == 4 and "training loss" in html_view
    bundle = progress._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget first, where it can be drawn
    assert "5 / 5 iterations" in bundle["text/html"] and bundle["text/html"].count("<polyline") == 4


def test_new_points_travel_alone_not_the_whole_series(source):
    """While it trains, each flush sends the browser only the iterations it has not drawn yet (a small
    message it appends); the whole series goes once, into the synced state, when the run ends."""
    progress = TrainingProgress(update_interval=0)
    sent = record_messages(progress.chart)
    job = unstarted_job(source, params(12))
    progress.attach(job)
    states_seen = []  # what the synced state held while the run went on
    job.on_progress(lambda p: states_seen.append(len(progress.chart.points.get("loss", []))))
    job._start().result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT) and progress.state == "done"

    appends = [m["content"] for m in sent if m.get("method") == "custom" and m["content"]["type"] == "append"]
    updates = [m["state"] for m in sent if m.get("method") == "update" and "points" in m.get("state", {})]
    assert len(appends) >= 6  # drawn as it trained (update_interval=0: a flush a report)
    loss = [(a["start"]["loss"], a["points"]["loss"]) for a in appends if "loss" in a["points"]]
    assert all(len(points) <= 2 for _, points in loss)  # no batch resends what was drawn (a report may bring 2)
    assert [start for start, _ in loss] == [0] + list(itertools.accumulate(len(p) for _, p in loss))[:-1]
    assert [x for _, points in loss for x, _ in points] == list(range(1, 13))  # each iteration once, in order
    assert set(states_seen) == {0}  # the synced series was never resent while training
    assert len(updates) == 1 and [x for x, _ in updates[0]["points"]["loss"]] == list(range(1, 13))

    sent.clear()
    other = unstarted_job(source, params(3))  # another session: its series replace the drawn ones, whole
    progress.attach(other)
    other._start().result(timeout=TIMEOUT)
    assert progress.wait(TIMEOUT)
    assert curves(progress)["loss"][0] == [1, 2, 3]
    assert any(m.get("method") == "update" and m["state"].get("points", {}).get("loss") == [] for m in sent)

    # A view that missed a batch asks for the whole series again, and gets it.
    sent.clear()
    progress.chart._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "resend"}}},
                                "buffers": []})
    assert [[x for x, _ in m["state"]["points"]["loss"]] for m in sent if m.get("method") == "update"] == [[1, 2, 3]]
