"""MediaPipe's C++ log lines (W0000 … inference_feedback_manager) stay out of stderr unless asked for."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from createml_widgets.features import native_logs

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO / "createml_widgets" / "samples" / "sign-language-digits").glob("*/*.JPG"))[:6]
SCRIPT = f"""
import sys
from createml_widgets.features.hand_keypoints import HandKeypointDetector, extract_image_keypoints
photos = {[str(p) for p in PHOTOS]!r}
with HandKeypointDetector() as d:
    print(d.detect(photos[0]).chirality)
print(sum(o is not None for o in extract_image_keypoints(photos, workers=2)))
print("a line of our own", file=sys.stderr)
raise SystemExit("error: the last line")
"""


def _run(**env):
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_mediapipe_warnings_are_silenced_and_everything_else_is_kept():
    out = _run(CREATEML_WIDGETS_NATIVE_LOGS="")
    assert out.returncode == 1, out.stderr
    assert "W0000" not in out.stderr and "absl::InitializeLog" not in out.stderr, out.stderr
    assert "a line of our own" in out.stderr and out.stderr.rstrip().endswith("error: the last line"), out.stderr
    assert out.stdout.split()[1] == str(len(PHOTOS)), out.stdout


def test_the_environment_variable_turns_them_back_on():
    out = _run(CREATEML_WIDGETS_NATIVE_LOGS="1")
    assert "W0000" in out.stderr and "inference_feedback_manager" in out.stderr, out.stderr
    assert out.stderr.rstrip().endswith("error: the last line"), out.stderr


# A hand pose run in a process whose fd 2 is taken over after the filter is on, the way pytest's capture
# does before every test (the W0000 lines used to reach the test output that way): fd 2 goes to a file.
TRAIN_SCRIPT = f"""
import os, sys
from createml_widgets import MLHandPoseClassifier
from createml_widgets.features.hand_keypoints import HandKeypointDetector
photos = {[str(p) for p in PHOTOS]!r}
with HandKeypointDetector() as d:  # the filter goes on here, on the first fd 2
    d.detect(photos[0])
captured = open(sys.argv[1], "wb")
os.dup2(captured.fileno(), 2)  # what pytest does before each test
model = MLHandPoseClassifier(MLHandPoseClassifier.DataSource.labeled_directories(sys.argv[2]),
                             MLHandPoseClassifier.ModelParameters(maximum_iterations=2))
print("trained", model.training_metrics.is_valid)
print("a line of our own", file=sys.stderr, flush=True)
"""


def _train(tmp_path, **env):
    folder = tmp_path / "photos"
    for label, part in (("a", PHOTOS[:3]), ("b", PHOTOS[3:])):
        (folder / label).mkdir(parents=True)
        for p in part:
            (folder / label / p.name).write_bytes(p.read_bytes())
    captured = tmp_path / "fd2.txt"
    out = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(captured), str(folder)], cwd=REPO,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO),
                              "CREATEML_WIDGETS_CACHE": str(tmp_path / "cache"), **env})  # MediaPipe runs
    assert out.returncode == 0, out.stderr
    assert "trained" in out.stdout, out.stdout
    return out.stderr + captured.read_text()


def test_a_hand_pose_run_writes_no_mediapipe_lines_even_when_fd_2_is_replaced(tmp_path):
    err = _train(tmp_path, CREATEML_WIDGETS_NATIVE_LOGS="")
    assert "W0000" not in err and "inference_feedback_manager" not in err, err
    assert "a line of our own" in err, err


def test_a_hand_pose_run_shows_them_when_asked(tmp_path):
    err = _train(tmp_path, CREATEML_WIDGETS_NATIVE_LOGS="1")
    assert "inference_feedback_manager" in err, err


# A detector built under one fd 2 and first used (or reset) under another: its graph logs when it runs.
LATE_SCRIPT = f"""
import os, sys
from createml_widgets.features.hand_keypoints import HandKeypointDetector
photos = {[str(p) for p in PHOTOS]!r}
image = HandKeypointDetector()
video = HandKeypointDetector(video=True)
captured = open(sys.argv[1], "wb")
os.dup2(captured.fileno(), 2)  # pytest's capture of the next test
image.detect(photos[0])
video.detect(photos[1])
video.reset()
video.detect(photos[2])
print("done")
"""


def test_a_detector_built_before_fd_2_is_replaced_logs_nothing_when_it_runs(tmp_path):
    captured = tmp_path / "fd2.txt"
    out = subprocess.run([sys.executable, "-c", LATE_SCRIPT, str(captured)], cwd=REPO, capture_output=True,
                         text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO),
                                                      "CREATEML_WIDGETS_NATIVE_LOGS": ""})
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    err = out.stderr + captured.read_text()
    assert "W0000" not in err and "inference_feedback_manager" not in err, err


def test_a_log_line_inside_a_progress_bar_line_is_cut_out():
    bar = b"\rExtracting features: 3/40 (8%)"
    log = b"W0000 00:00:1796156631.117026    8856 inference_feedback_manager.cc:114] Feedback manager\n"
    assert native_logs.filter_lines(bar + log + bar + b"\n") == bar + bar + b"\n"


def test_the_filter_drops_only_info_and_warning_lines():
    data = (b"W0000 00:00:1796156631.117026    8856 inference_feedback_manager.cc:114] Feedback manager\n"
            b"I0000 00:00:1796156631.1 12 gl_context.cc:369] GL version\n"
            b"E0000 00:00:1796156631.117026    8856 calculator_graph.cc:887] a real error\n"
            b"Traceback (most recent call last):\n")
    assert native_logs.filter_lines(data) == (b"E0000 00:00:1796156631.117026    8856 calculator_graph.cc:887] "
                                              b"a real error\nTraceback (most recent call last):\n")
