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


def test_the_filter_drops_only_info_and_warning_lines():
    data = (b"W0000 00:00:1796156631.117026    8856 inference_feedback_manager.cc:114] Feedback manager\n"
            b"I0000 00:00:1796156631.1 12 gl_context.cc:369] GL version\n"
            b"E0000 00:00:1796156631.117026    8856 calculator_graph.cc:887] a real error\n"
            b"Traceback (most recent call last):\n")
    assert native_logs.filter_lines(data) == (b"E0000 00:00:1796156631.117026    8856 calculator_graph.cc:887] "
                                              b"a real error\nTraceback (most recent call last):\n")
