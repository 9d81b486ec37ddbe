"""kill -9 during feature extraction and during training, then restore + resume in a new process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from createml_widgets import MLImageClassifier, MLPhase, MLTrainingSessionParameters

TRAIN_SCRIPT = """
import sys
from createml_widgets import MLImageClassifier, MLSplitStrategy, MLTrainingSessionParameters, ValidationData
data = MLImageClassifier.DataSource.labeled_directories(sys.argv[1])
clf = MLImageClassifier.ClassifierType.multilayer_perceptron([64])
params = MLImageClassifier.ModelParameters(
    validation=ValidationData.split(MLSplitStrategy.fixed(0.1, seed=0)), max_iterations=int(sys.argv[3]),
    algorithm=MLImageClassifier.ModelAlgorithmType.transfer_learning(classifier=clf))
sp = MLTrainingSessionParameters(sys.argv[2], report_interval=1, checkpoint_interval=1)
MLImageClassifier.train(data, params, sp).result()
"""


def _state(session_dir: Path) -> dict:
    try:
        return json.loads((session_dir / "session.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _run_until(session_dir: Path, data: Path, iterations: int, env: dict, stop) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(data), str(session_dir), str(iterations)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            state = _state(session_dir)
            if state and stop(state):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return state
            if proc.poll() is not None:
                pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        pytest.fail("the training process never reached the point to kill it")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_resume_after_kill_during_extraction_and_training(digits_dir, tmp_path):
    env = dict(os.environ, CREATEML_WIDGETS_CACHE=str(tmp_path / "cache"))  # cold cache: real extraction
    session_dir = tmp_path / "session"

    # 1. Killed while extracting features, after the first chunks were checkpointed.
    _run_until(session_dir, digits_dir, 300, env,
               lambda s: s.get("phase") == "extractingFeatures" and len(s.get("features", {}).get("chunks", [])) >= 2)
    killed = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir))
    assert killed.phase == MLPhase.EXTRACTING_FEATURES
    kept = len(killed.features.features)
    assert 64 <= kept < 200

    # 2. Resumed in a new process: extraction continues where it stopped, then killed mid-training.
    state = _run_until(session_dir, digits_dir, 300, env,
                       lambda s: s.get("phase") == "training" and s.get("iteration", 0) >= 5)
    assert state["summary"]["extraction"]["resumed_from"] == kept  # finished items were not redone
    killed = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir))
    assert killed.phase == MLPhase.TRAINING and len(killed.features.features) == 200
    done_iterations = killed.latest_training_checkpoint().iteration
    assert 5 <= done_iterations < 300

    # 3. Resumed here: training continues from the last checkpoint, not from iteration 1.
    os.environ["CREATEML_WIDGETS_CACHE"], old = str(tmp_path / "cache-unused"), os.environ["CREATEML_WIDGETS_CACHE"]
    try:
        restored = MLImageClassifier.restore_training_session(
            MLTrainingSessionParameters(session_dir, report_interval=1, checkpoint_interval=50))
        seen = []
        job = MLImageClassifier.resume(restored)
        job.on_progress(lambda p: seen.append((p.phase, p.item_count)))
        model = job.result(timeout=600)
    finally:
        os.environ["CREATEML_WIDGETS_CACHE"] = old
    assert all(phase != MLPhase.EXTRACTING_FEATURES for phase, _ in seen)
    first_training = next(n for phase, n in seen if phase == MLPhase.TRAINING)
    assert first_training == done_iterations + 1
    assert model._iterations == 300
    assert model.validation_metrics.accuracy >= 0.8
