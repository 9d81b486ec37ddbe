"""TrainerApp end to end on real data: data -> parameters -> training -> evaluation -> preview -> export
(a real .mlmodel offered as a download: its bytes come back on a click), plus the static `_repr_html_`
views that need no kernel."""
from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from widget_helpers import click

from createml_widgets import MLImageClassifier, MLSplitStrategy
from createml_widgets.session import JobCancelledError, MLPhase
from createml_widgets.widgets import InvalidParametersError, TrainerApp
from createml_widgets.widgets._sessions import folder_busy

IC = MLImageClassifier
TIMEOUT = 180
SECTIONS = ["Data", "Parameters", "Training", "Evaluation", "Preview", "Export"]


def section_titles(app: TrainerApp) -> list[str]:
    return [re.sub(r"<[^>]+>", "", box.children[0].value).lstrip("0123456789") for box in app.body.children]


def wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture()
def root(image_root, tmp_path):
    shutil.copytree(image_root / "digits", tmp_path / "digits")
    return tmp_path


def test_starts_on_the_bundled_sample_ready_to_train():
    app = TrainerApp()
    assert app.task == "image" and app.task_select.value == "image"
    assert [v for _label, v in app.task_select.options] == ["image", "hand_pose", "hand_action"]
    assert section_titles(app) == SECTIONS
    assert app.picker.ready and app.picker.path == "sign-language-digits"
    assert app.form.parameters == IC.ModelParameters()
    assert not app.train_button.disabled and app.export_button.disabled and app.preview.predict_button.disabled
    assert app.progress.state == "idle" and app.confusion.metrics is None
    assert app.preview.root == app.picker.root
    assert "<style>" in app.children[0].value and "Image Classifier" in app.title.value


def test_from_data_to_a_downloaded_core_ml_model(root):
    app = TrainerApp(root=root)
    assert app.picker.path == "" and not app.picker.ready  # the root holds one folder: not labels yet
    app.picker.folders.value = "digits"
    assert app.picker.ready and app.picker.counts == {"0": 6, "1": 6, "5": 6}
    app.form.fields["max_iterations"].input.value = "6"
    app.form.fields["validation"].choice.value = "fixed"
    app.form.fields["validation"].ratio.value = "0.34"
    app.form.fields["validation"].seed.value = "0"
    states = []
    app.progress.observe(lambda ch: states.append((ch["new"], app.train_button.disabled)), "state")

    app.train_button.click()
    job = app.job
    assert job is not None and app.progress.job is job and "training on" in app.train_message.value
    assert "digits" in app.train_message.value and str(root) not in app.train_message.value  # no server path
    assert job.session.model_parameters == app.form.parameters
    model = job.result(timeout=TIMEOUT)
    assert app.progress.wait(TIMEOUT)
    assert states == [("running", True), ("done", False)]  # no second run while one trains
    assert app.model is model and model._iterations == 6 and "done" in app.train_message.value

    # Evaluation: validation and training metrics, their matrices, the model's own summary.
    assert app.confusion.dataset_toggle.options == ("Validation", "Training")
    assert app.confusion.metrics is model.validation_metrics and model.validation_metrics.count == 6
    assert [list(r) for r in app.confusion.heatmap.z] == model.validation_metrics.confusion_matrix.values.tolist()
    assert "Model summary" in app.model_summary.value and "MLImageClassifier" in app.model_summary.value

    # Preview: the trained model on a photo under the same root.
    assert app.preview.model is model and not app.preview.predict_button.disabled
    ranked = app.preview.predict("digits/5/" + sorted(p.name for p in (root / "digits" / "5").iterdir())[0])
    assert ranked[0][0] == "5"

    # Export: the button writes the .mlmodel on a thread and offers it as a download link.
    app.export_name.value = "../../My Digits"
    assert not app.export_button.disabled
    app.export_button.click()
    assert wait_for(lambda: app.download.filename or "Export failed" in app.download.value)
    assert "Export failed" not in app.download.value, app.download.value
    path = app.export_path
    assert path.name == "My Digits.mlmodel" and path.parent != root and not path.parent.is_relative_to(root)
    assert app.download.filename == "My Digits.mlmodel"
    reply, (data,) = click(app.download)  # what the link's click is answered with
    assert reply["name"] == "My Digits.mlmodel" and data == path.read_bytes()
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == ["0", "1", "5"]
    assert wait_for(lambda: not app.export_button.disabled, 10)


def test_the_preview_default_follows_the_data_and_is_never_a_training_photo(root):
    """The student's data replaces the sample: the preview's default file comes from it, and once a model
    is trained, is one held out from training (a training photo would score ~100%)."""
    app = TrainerApp(root=root)
    app.picker.navigate("digits")
    assert app.preview.data_folder == "digits" and app.preview.path_input.value.startswith("digits/")
    source = app.picker.data_source
    model = MLImageClassifier(source, IC.ModelParameters(max_iterations=3, validation=IC.ValidationData.split(
        MLSplitStrategy.fixed(0.5, seed=1))))
    app._show_model(model)
    chosen = (root / app.preview.path_input.value).resolve()
    assert chosen not in app.preview.trained_on()
    assert chosen in {Path(p).resolve() for p in model.validation_metrics.examples["Path"]}


def test_training_is_refused_with_a_message_when_data_or_parameters_are_wrong(root):
    app = TrainerApp(root=root)
    with pytest.raises(ValueError, match="only one label"):
        app.train()  # the root itself: one label folder "digits"
    assert "choose a folder with labelled training data first" in app.train_message.value
    app.picker.navigate("digits")
    app.form.fields["max_iterations"].input.value = "zero"
    with pytest.raises(InvalidParametersError):
        app.train()
    assert "fix the parameters first" in app.train_message.value
    app.train_message.value = ""
    app.train_button.click()  # the button shows the same message instead of raising
    assert "fix the parameters first" in app.train_message.value
    assert app.job is None and app.progress.state == "idle"


def test_switching_task_rebuilds_the_steps_and_cancels_the_run(root):
    app = TrainerApp(root=root)
    app.picker.navigate("digits")
    app.form.fields["max_iterations"].input.value = "400"
    app.form.fields["algorithm"].classifier.value = "multilayer_perceptron"
    job = app.train()
    old_progress, old_picker = app.progress, app.picker
    assert wait_for(lambda: job.phase == MLPhase.TRAINING or job.done())
    app.task_select.value = "hand_pose"  # a click on the task buttons
    assert app.task == "hand_pose" and app.info.key == "hand_pose"
    assert app.picker is not old_picker and app.picker.task.key == "hand_pose" and app.picker.root == root
    assert list(app.form.fields) == ["validation", "batch_size", "maximum_iterations", "augmentation_options",
                                     "algorithm"]
    assert app.job is None and app.model is None and section_titles(app) == SECTIONS
    assert "Hand Pose Classifier" in app.title.value
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)  # the image run was cancelled

    # Anything the old progress widget still reports (here: a finished model) must not reach the new task.
    old_progress.attach(_finished_job(root))
    assert old_progress.wait(TIMEOUT) and old_progress.model is not None
    assert app.model is None and app.confusion.metrics is None and app.preview.model is None
    assert app.export_button.disabled and not app.train_button.disabled

    app.task = "image"
    assert app.task_select.value == "image" and app.form.task.key == "image"


def _finished_job(root):
    job = IC.train(IC.DataSource.labeled_directories(root / "digits"), IC.ModelParameters(max_iterations=2))
    job.result(timeout=TIMEOUT)
    return job


# -- the hand tasks ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_hand_action_from_annotated_clips_to_a_core_ml_model(annotated_clips, tmp_path):
    from createml_widgets import MLHandActionClassifier

    shutil.copytree(annotated_clips, tmp_path / "clips")
    app = TrainerApp("hand_action", root=tmp_path)
    assert app.task == "hand_action" and "Hand Action Classifier" in app.title.value
    app.picker.folders.value = "clips"
    assert app.picker.ready and app.picker.detected_layout == "annotation"
    assert app.picker.counts == {"wave": 6, "zoom": 6}
    fields = app.form.fields
    fields["maximum_iterations"].input.value = "5"
    fields["prediction_window_size"].input.value = "15"
    fields["validation"].choice.value = "none"
    assert app.form.valid

    app.train_button.click()
    job = app.job
    assert job is not None and job.session.model_parameters.prediction_window_size == 15
    model = job.result(timeout=TIMEOUT)
    assert app.progress.wait(TIMEOUT) and app.progress.state == "done" and "done" in app.train_message.value
    assert isinstance(model, MLHandActionClassifier) and app.model is model and model._iterations == 5
    assert curves_drawn(app) == 5 and app.progress.counts_label.value.startswith("5 / 5 iterations")

    # Evaluation: one example per annotated time range, each named with it.
    assert app.confusion.dataset_toggle.options == ("Training",)  # no validation data: nothing else to show
    m = app.confusion.metrics
    assert m is model.training_metrics and m.count == 12
    assert sorted(set(re.findall(r"\[[^\]]+\]$", i)[0] for i in m.examples["Item"])) == ["[0.0s–1.0s]", "[1.0s–2.0s]"]
    app.confusion.select_cell("wave", "wave")
    assert app.confusion.examples_html.value.count("<img src='data:image/jpeg") == len(m.examples_in_cell("wave", "wave"))

    # Preview: one prediction per window of 15 frames along a clip, on its timeline.
    clip = sorted((tmp_path / "clips").glob("wave_*.mp4"))[0]
    predictions = app.preview.predict(f"clips/{clip.name}")
    assert [p.frame_range for p in predictions] == [p.frame_range for p in model.prediction(clip)]
    assert len(predictions) >= 2 and all(p.frame_range.stop - p.frame_range.start <= 15 for p in predictions)
    assert app.preview.timeline.value.count("cmlw-timeline-window") == len(predictions)

    # Export: a Core ML classifier over windows of 15 frames.
    path = app.export(tmp_path / "out")
    assert path.name == "HandActionClassifier.mlmodel" and app.download.filename == path.name
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == ["wave", "zoom"]
    assert list(spec.description.input[0].type.multiArrayType.shape)[0] == 15

    # The Export step also writes ONNX (no precision choice there) and says what each file is for.
    assert "Xcode" in app.export_help.value and not app.export_precision.disabled
    assert app.export_precision.value == MLHandActionClassifier.default_precision
    app.export_format.value = ".onnx"
    assert app.export_name.value == "HandActionClassifier.onnx" and app.export_precision.disabled
    assert "ONNX Runtime" in app.export_help.value
    onnx_path = app.export(tmp_path / "out")
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert onnx_path.name == "HandActionClassifier.onnx" and props["classLabels"] == '["wave", "zoom"]'
    assert props["Prediction Window Size"] == "15" and app.download.filename == onnx_path.name
    assert click(app.download)[1] == [onnx_path.read_bytes()]


def curves_drawn(app: TrainerApp) -> int:
    """Iterations on the training-loss curve."""
    return len(app.progress.chart.data["loss"])


@pytest.mark.slow
def test_hand_pose_photos_without_a_hand_are_shown_in_the_app(tmp_path):
    from PIL import Image
    from widget_helpers import copy_photos

    from createml_widgets import MLHandPoseClassifier as HP
    from createml_widgets.metrics import NO_PREDICTION

    train = copy_photos(tmp_path / "poses", per_label=5)
    val = copy_photos(tmp_path / "held-out", per_label=1, start=10)
    # No hand in these two. Their colours differ from conftest's blank photos: the feature cache, keyed by
    # content, would answer with the reason it stored for those, which names those files.
    Image.new("RGB", (160, 160), (210, 205, 200)).save(train / "0" / "wall.png")
    Image.new("RGB", (160, 160), (95, 145, 205)).save(val / "1" / "sky.png")
    app = TrainerApp("hand_pose", root=tmp_path)
    app.picker.navigate("poses")
    assert app.picker.ready and app.picker.counts == {"0": 6, "1": 5, "5": 5}
    app.form.set_parameters(HP.ModelParameters(maximum_iterations=10, validation=HP.ValidationData.data_source(
        HP.DataSource.labeled_directories(val))))
    job = app.train()
    model = job.result(timeout=TIMEOUT)
    assert app.progress.wait(TIMEOUT) and app.model is model

    cm = app.confusion
    assert cm.dataset_toggle.options == ("Validation", "Training") and cm.metrics is model.validation_metrics
    assert NO_PREDICTION in list(cm.heatmap.x) and "1 with no hand detected" in cm.summary.value
    assert "sky.png" in cm.skipped_html.value and "counted as" in cm.skipped_html.value
    examples = cm.select_cell("1", NO_PREDICTION)
    assert [Path(i).name for i in examples["Item"]] == ["sky.png"]
    cm.dataset_toggle.value = "Training"
    assert "wall.png" in cm.skipped_html.value and "not in these metrics" in cm.skipped_html.value
    assert "wall.png" in app.model_summary.value and "sky.png" in app.model_summary.value  # the model's summary too
    for shown in (cm.skipped_html.value, app.model_summary.value):  # no server paths on the page
        assert "no hand was detected in poses/0/wall.png" in shown and str(tmp_path) not in shown


# -- static HTML views ------------------------------------------------------------------------------
class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.sources = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [v for k, v in attrs if k in ("src", "href") and v]


def assert_static(html: str) -> _Collector:
    """Self-contained HTML: no scripts, no widgets, no external files (what nbviewer/GitHub can show)."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    assert "script" not in parser.tags and "iframe" not in parser.tags
    assert "application/vnd.jupyter.widget" not in html and "require(" not in html
    assert all(src.startswith("data:") for src in parser.sources), parser.sources
    return parser


def test_repr_html_of_models_metrics_and_sessions_is_static(root, image_model, confusing_metrics):
    html = image_model._repr_html_()
    assert_static(html)
    assert "MLImageClassifier" in html and "training 100.0%" in html and "max_iterations" in html

    html = confusing_metrics._repr_html_()
    assert_static(html)
    assert "Confusion matrix" in html and "Precision / recall" in html and "9 examples" in html

    job = IC.train(IC.DataSource.labeled_directories(root / "digits"), IC.ModelParameters(max_iterations=3))
    job.result(timeout=TIMEOUT)
    html = job.session._repr_html_()
    assert_static(html)
    assert "MLTrainingSession · MLImageClassifier" in html and "evaluating" in html
    assert f"Checkpoints ({len(job.session.checkpoints)})" in html


@pytest.mark.slow
def test_repr_html_of_a_hand_pose_model_shows_skeletons_inline(hand_pose_model):
    parser = assert_static(hand_pose_model._repr_html_())
    assert parser.tags.count("img") >= 3  # one photo with its keypoints per label, as data URIs
    assert all(src.startswith("data:image/jpeg;base64,") for src in parser.sources)


# -- the data root -----------------------------------------------------------------------------------
def test_the_data_root_comes_from_the_environment(root, tmp_path, monkeypatch):
    from createml_widgets import samples
    from createml_widgets.widgets import PredictionPreview
    from createml_widgets.widgets._paths import DATA_ROOT_ENV

    samples_before = sorted(p.name for p in samples.ROOT.iterdir())
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    app = TrainerApp()
    assert app.picker.root == root.resolve() and app.preview.root == root.resolve()
    assert PredictionPreview().root == root.resolve()
    app.picker.navigate("digits")
    assert app.picker.ready and app.picker.counts == {"0": 6, "1": 6, "5": 6}
    photo = sorted((root / "digits" / "0").iterdir())[0].read_bytes()
    saved = app.picker.save_uploads([{"name": "mine.jpg", "content": photo}], label="0")
    assert saved == [(root / "uploads" / "0" / "mine.jpg").resolve()]  # not inside the package
    assert sorted(p.name for p in samples.ROOT.iterdir()) == samples_before

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert TrainerApp(root=elsewhere).picker.root == elsewhere.resolve()  # an explicit root wins

    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(NotADirectoryError, match=DATA_ROOT_ENV):
        TrainerApp()

    monkeypatch.setenv(DATA_ROOT_ENV, "")  # empty or unset: the bundled samples, as before
    assert TrainerApp().picker.root == samples.ROOT.resolve()
    monkeypatch.delenv(DATA_ROOT_ENV)
    app = TrainerApp()
    assert app.picker.root == samples.ROOT.resolve() and app.picker.ready


# -- a classroom's session: tasks kept across switches, nothing held out said plainly ------------------
def test_switching_back_shows_the_trained_model_and_its_parameters(root):
    app = TrainerApp(root=root)
    app.picker.navigate("digits")
    app.form.fields["max_iterations"].input.value = "7"
    job = app.train()
    job.result(timeout=TIMEOUT)
    assert app.progress.wait(TIMEOUT) and wait_for(lambda: app.model is not None)
    model, picker, progress = app.model, app.picker, app.progress
    app.task = "hand_pose"
    assert app.model is None and app.picker is not picker
    app.task = "image"
    assert app.model is model and app.picker is picker and app.progress is progress
    assert app.form.fields["max_iterations"].input.value == "7" and app.picker.path == "digits"
    assert app.confusion.metrics is not None and app.preview.model is model and not app.export_button.disabled
    assert "done" in app.progress.phase_label.value


def test_nothing_held_out_is_said_plainly_and_one_click_holds_some_out(root):
    app = TrainerApp(root=root)
    app.picker.navigate("digits")  # 18 photos: under 50, Create ML's automatic split holds nothing out
    app.form.fields["max_iterations"].input.value = "3"
    app.train().result(timeout=TIMEOUT)
    assert wait_for(lambda: app.model is not None)
    assert not app.model.validation_metrics.is_valid
    assert wait_for(lambda: app.holdout_box.layout.display is None)
    note = app.holdout_note.value
    assert "Nothing was held out" in note and "fewer than 50 examples (18 here)" in note, note
    assert "the same 18 images the model learned from" in note, note
    summary = app.confusion.summary.value
    assert "Training accuracy" in summary and "the model learned from" in summary, summary
    job = app.hold_out_and_train()
    assert app.form.parameters.validation.strategy.ratio == 0.2
    job.result(timeout=TIMEOUT)
    assert wait_for(lambda: app.model is not None and app.model.validation_metrics.is_valid)
    assert wait_for(lambda: app.holdout_box.layout.display == "none")
    assert wait_for(lambda: "Validation accuracy" in app.confusion.summary.value)
    assert "on 3 examples held out from training" in app.confusion.summary.value


def test_a_page_left_under_voila_stops_training_and_frees_the_app(root, monkeypatch):
    app = TrainerApp(root=root)
    app.picker.navigate("digits")
    app.form.fields["max_iterations"].input.value = "400"
    app.form.fields["algorithm"].classifier.value = "multilayer_perceptron"
    job = app.train()
    assert app.leave_guard is not None and wait_for(lambda: app.leave_guard.active)
    app.page_left()  # in Jupyter: nothing happens (the notebook's kernel outlives its tab)
    assert not job.done() and app.progress is not None
    monkeypatch.setenv("VOILA_REQUEST_URL", "http://127.0.0.1:8866/")
    assert "__cmlwTraining=true" in app.leave_guard.html.value  # the browser asks before leaving
    app.leave_guard.page_left_button.click()  # what the page's pagehide handler clicks
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)
    assert app.progress is None and app.model is None and app._views == {}
    assert app.comm is None  # closed, as every widget of the page


def test_the_model_view_shows_its_training_curve_and_its_mistakes_as_pictures(image_model, confusing_metrics):
    from createml_widgets.display import mistakes_html

    html = image_model._repr_html_()
    assert_static(html)
    assert "Training curve" in html and "<svg class='cmlw-history'" in html and html.count("<polyline") >= 2
    assert "Mistakes (" in html
    pictures = mistakes_html(confusing_metrics)
    parser = assert_static(pictures)
    wrong = confusing_metrics.examples
    wrong = wrong[wrong["True Label"] != wrong["Predicted"]]
    assert parser.tags.count("img") == min(8, len(wrong)) > 0
    assert all(src.startswith("data:image/jpeg;base64,") for src in parser.sources)
    assert "0 → 1" in pictures


def test_a_new_app_finds_the_interrupted_session_on_disk_and_resumes_it(root, tmp_path):
    """A reload mid-training: the first page's run stops (Voilà's page_left cancels it; here the job is
    cancelled the same way), a new app on the same session root offers Resume, and Resume continues the
    interrupted session's iterations to its end instead of starting over."""
    sessions = tmp_path / "sessions"
    first = TrainerApp(root=root, session_root=sessions)
    first.picker.navigate("digits")
    first.form.fields["max_iterations"].input.value = "150"
    first.form.fields["algorithm"].classifier.value = "multilayer_perceptron"
    job = first.train()
    assert job.session.session_directory.parent == sessions  # a folder per task and data set
    assert wait_for(lambda: (job.session.phase == MLPhase.TRAINING and job.session.iteration >= 12) or job.done())
    job.cancel()  # what page_left does to the run of the page left
    with pytest.raises(JobCancelledError):
        job.result(timeout=TIMEOUT)
    stopped = job.session.iteration
    assert 12 <= stopped < 150

    reloaded = datetime.datetime.now()
    second = TrainerApp(root=root, session_root=sessions)  # the reloaded page: a new app
    assert second.progress.state == "idle"  # the root itself is not the data trained on
    second.picker.navigate("digits")
    progress = second.progress
    assert progress.state == "cancelled" and not progress.resume_button.disabled
    assert progress.stopped_session.session_directory == job.session.session_directory
    assert f"stopped at iteration {stopped} of 150" in second.train_message.value
    assert [h["iteration"] for h in progress.history][-1] == stopped  # its curve so far is shown
    # ... in the chart's synced state too: a page drawn after the points were sent starts from it
    assert [x for x, _y in progress.chart.points["loss"]][-1] == stopped
    assert progress.item_count == stopped and progress.total_item_count == 150
    assert second.form.parameters.algorithm == first.form.parameters.algorithm  # what it was started with
    shown = progress.stopped_session
    second.picker.refresh()  # the folder is read again (an upload, a snap): the session shown stays as it is
    assert progress.stopped_session is shown and progress.state == "cancelled"
    # The first page's kernel may still hold the folder (it has not heard the page was left): another
    # process holds its lock for a moment, and Resume waits for it, then goes on.
    folder = job.session.session_directory
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY);"
                               " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(2)", str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held" and folder_busy(folder)
    progress.resume_button.click()
    assert progress.state == "waiting" and progress.resume_button.disabled
    assert "still holds this session" in second.train_message.value
    assert holder.wait(30) == 0
    assert wait_for(lambda: progress.state != "waiting", 30)
    resumed = second.job
    assert resumed is progress.job and resumed.session.session_directory == folder
    assert progress.wait(TIMEOUT) and progress.state == "done", progress.error
    assert second.model is not None and second.model.training_metrics.is_valid
    assert resumed.session.iteration == 150
    assert [h["iteration"] for h in resumed.session.history] == list(range(1, 151))
    # continued, not started over: the same session (its start date), its features from the first page (the
    # extraction checkpoint written before the reload), every training checkpoint since past the stop
    assert resumed.session.date == job.session.date
    extraction = [c for c in resumed.session.checkpoints if c.phase == MLPhase.EXTRACTING_FEATURES]
    assert extraction and all(c.date < reloaded for c in extraction)
    training = [c for c in resumed.session.checkpoints if c.phase == MLPhase.TRAINING]
    assert training and all(c.iteration > stopped for c in training if c.date >= reloaded)

    # Once finished there is nothing to resume; Train starts the folder's session over.
    third = TrainerApp(root=root, session_root=sessions)
    third.picker.navigate("digits")
    assert third.progress.state == "idle" and third.progress.resume_button.disabled
