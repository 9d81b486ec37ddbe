"""The shared engine under the hand tasks: cached keypoints, cancel and resume, checkpoints."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import createml_widgets.tasks.hand_action_classifier as hac
from createml_widgets import (
    MLHandActionClassifier,
    MLHandPoseClassifier,
    MLPhase,
    MLTrainingSessionParameters,
    ValidationData,
)

HP, HA = MLHandPoseClassifier, MLHandActionClassifier


@pytest.fixture(scope="module")
def few_clips(action_clips, tmp_path_factory):
    """2 real clips for each of 2 actions."""
    root = tmp_path_factory.mktemp("few-clips")
    for label in ("wave", "zoom"):
        (root / label).mkdir()
        for clip in sorted((action_clips[0] / label).iterdir())[:2]:
            shutil.copy(clip, root / label / clip.name)
    return root


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    """A feature cache of this test's own: what other tests extracted must not count as hits here."""
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "cache"))


def test_second_hand_pose_training_reads_keypoints_from_the_cache(small_digits, own_cache):
    data = HP.DataSource.labeled_directories(small_digits)
    params = HP.ModelParameters(maximum_iterations=3, validation=ValidationData.none())
    first = HP.train(data, params)
    first.result(timeout=300)
    assert first.session.summary["extraction"]["extracted"] == 24
    again = HP.train(data, HP.ModelParameters(maximum_iterations=4, batch_size=8, validation=ValidationData.none()))
    again.result(timeout=300)
    assert again.session.summary["extraction"] == {"items": 24, "resumed_from": 0, "from_cache": 24, "extracted": 0}


def test_second_hand_action_training_reads_keypoints_from_the_cache(few_clips, own_cache):
    data = HA.DataSource.labeled_directories(few_clips)
    params = HA.ModelParameters(prediction_window_size=30, maximum_iterations=2, validation=ValidationData.none())
    first = HA.train(data, params)
    first.result(timeout=300)
    assert first.session.summary["extraction"]["extracted"] == 4
    again = HA.train(data, params)
    again.result(timeout=300)
    assert again.session.summary["extraction"]["from_cache"] == 4
    assert again.session.summary["extraction"]["extracted"] == 0
    other_rate = HA.train(data, HA.ModelParameters(prediction_window_size=30, maximum_iterations=2,
                                                   target_frame_rate=15, validation=ValidationData.none()))
    other_rate.result(timeout=300)
    assert other_rate.session.summary["extraction"]["extracted"] == 4  # another frame rate: other keypoints


def test_hand_action_cancel_resume_and_from_checkpoint(few_clips, tmp_path, cancel_at, monkeypatch):
    data = HA.DataSource.labeled_directories(few_clips)
    params = HA.ModelParameters(prediction_window_size=30, maximum_iterations=40, validation=ValidationData.none())
    sp = MLTrainingSessionParameters(tmp_path / "s", report_interval=1, checkpoint_interval=5)
    session = HA.make_training_session(data, params, sp)
    stopped_at = cancel_at(HA, session, 7)
    assert 7 <= stopped_at < 40

    restored = HA.restore_training_session(sp)  # as a new process would
    assert restored.phase == MLPhase.TRAINING and restored.iteration == stopped_at
    resumed, phases = [], set()
    extraction = dict(restored.summary["extraction"])  # what the first run extracted (or read from the cache)
    threads = restored.summary["train_threads"]  # counted once, at the first training, and kept
    assert isinstance(threads, int) and threads >= 1
    seen = []
    real_trainer = hac.Trainer
    import createml_widgets.nets.training as training

    monkeypatch.setattr(training, "idle_cores", lambda: threads + 1)  # the machine is quieter now
    monkeypatch.setattr(hac, "Trainer", lambda *a, **kw: seen.append(kw["threads"]) or real_trainer(*a, **kw))
    job2 = HA.resume(restored)
    job2.on_progress(lambda p: phases.add(p.phase))
    job2.on_progress(lambda p: resumed.append(p.item_count) if p.phase == MLPhase.TRAINING else None)
    model = job2.result(timeout=300)
    assert resumed[0] == stopped_at + 1 and model._iterations == 40
    # Keypoints were not extracted again: no extraction phase, the first run's account unchanged.
    assert MLPhase.EXTRACTING_FEATURES not in phases and MLPhase.TRAINING in phases
    assert job2.session.summary["extraction"] == extraction
    assert seen == [threads] and job2.session.summary["train_threads"] == threads  # the same count: the same run

    last = [c for c in restored.checkpoints if c.phase == MLPhase.TRAINING][-1]
    assert last.iteration == 40
    again = HA.from_checkpoint(last)
    window = model.keypoints(sorted((few_clips / "wave").iterdir())[0])[:30]
    a, b = model.prediction(window)[0].results, again.prediction(window)[0].results
    assert [label for label, _ in a] == [label for label, _ in b]
    assert np.allclose([c for _, c in a], [c for _, c in b], atol=1e-5)


def test_a_cached_no_hand_names_the_file_at_hand_not_its_first_copy(small_digits, tmp_path, own_cache):
    """The cache is keyed by content: the remembered "no hand" of one file is replayed for a copy, and
    must then name the copy."""
    from PIL import Image

    Image.new("RGB", (160, 160), (200, 200, 200)).save(small_digits / "1" / "first.png")
    params = HP.ModelParameters(maximum_iterations=1, validation=ValidationData.none())
    HP(HP.DataSource.labeled_directories(small_digits), params)
    (small_digits / "1" / "first.png").rename(small_digits / "1" / "copy.png")
    again = HP.train(HP.DataSource.labeled_directories(small_digits), params)
    model = again.result(timeout=300)
    assert again.session.summary["extraction"]["extracted"] == 0  # the failure came from the cache
    [reason] = [s["reason"] for s in model.training_metrics.skipped if "NoHand" in s["reason"]]
    assert "copy.png" in reason and "first.png" not in reason
