"""Checkpoints and feature chunks as damaged files meet them: digests, damaged-file errors naming the file, the
fall-back to the previous good checkpoint, a bounded set of checkpoints, an exactly reproducible MLP (issue 11)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from createml_widgets import (
    MLImageClassifier,
    MLPhase,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    SessionError,
    ValidationData,
)
from createml_widgets.session import KEEP_LATEST_CHECKPOINTS, load_tensors


def _mlp(iterations: int, validation: bool = True) -> MLImageClassifier.ModelParameters:
    clf = MLImageClassifier.ClassifierType.multilayer_perceptron([32])
    v = ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)) if validation else ValidationData.none()
    return MLImageClassifier.ModelParameters(
        validation=v, max_iterations=iterations,
        algorithm=MLImageClassifier.ModelAlgorithmType.transfer_learning(classifier=clf))


def _train(small_digits: Path, session_dir: Path | None, iterations: int, **sp):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    job = MLImageClassifier.train(data, _mlp(iterations), MLTrainingSessionParameters(session_dir, **sp))
    return job, job.result(timeout=300)


def _restore(session_dir: Path, **sp):
    return MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir, **sp))


def _flip_middle(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _training(session):
    return sorted((c for c in session.checkpoints if c.phase == MLPhase.TRAINING), key=lambda c: c.iteration)


# -- 4. digests ------------------------------------------------------------------------------------------------------
def test_every_checkpoint_and_chunk_has_its_sha256_in_session_json(small_digits, tmp_path):
    import hashlib

    _train(small_digits, tmp_path / "s", 4, checkpoint_interval=2)
    state = json.loads((tmp_path / "s" / "session.json").read_text())
    for c in state["checkpoints"]:
        if c["phase"] == "training":
            assert c["sha256"] == hashlib.sha256((tmp_path / "s" / c["url"]).read_bytes()).hexdigest()
    assert state["features"]["chunks"]
    for name in state["features"]["chunks"]:
        assert state["features"]["sha256"][name] == hashlib.sha256((tmp_path / "s" / name).read_bytes()).hexdigest()


def test_flipped_bytes_inside_a_checkpoints_tensors_are_caught(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    _train(small_digits, session_dir, 4, checkpoint_interval=2)
    latest = _training(_restore(session_dir))[-1]
    _flip_middle(latest.url)  # the middle of the file is tensor data: torch.load alone reads it without a word
    with pytest.raises(SessionError, match=f"{latest.url}.*SHA-256"):
        MLImageClassifier.from_checkpoint(latest)
    with pytest.raises(SessionError, match="SHA-256"):
        load_tensors(latest.url, latest.sha256)


def test_a_damaged_feature_chunk_is_a_session_error_naming_it(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    _train(small_digits, session_dir, 2)
    chunk = next((session_dir / "features").iterdir())
    _flip_middle(chunk)
    with pytest.raises(SessionError, match=f"{chunk}.*damaged"):
        _restore(session_dir)
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    with pytest.raises(SessionError, match=f"{chunk}.*damaged"):
        _restore(session_dir)


# -- 5. damaged session files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", '{"format": 1, "task": "MLImag', "[]", '{"task": "MLImageClassifier"}',
                                     '{"task": "MLImageClassifier", "training_data": 3, "parameters": {}}'])
def test_a_truncated_or_damaged_session_json_is_a_session_error_naming_it(small_digits, tmp_path, content):
    session_dir = tmp_path / "s"
    _train(small_digits, session_dir, 2)
    (session_dir / "session.json").write_text(content)
    with pytest.raises(SessionError, match=str(session_dir / "session.json")):
        _restore(session_dir)


def _cancelled_at(cancel_at, small_digits, session_dir: Path, iteration: int) -> None:
    """A 20-iteration MLP session, checkpointed every 2 iterations, cancelled once `iteration` is reported."""
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(session_dir, report_interval=1, checkpoint_interval=2)
    session = MLImageClassifier.make_training_session(data, _mlp(20), sp)
    cancel_at(MLImageClassifier, session, iteration)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(small_digits, tmp_path, cancel_at):
    session_dir = tmp_path / "s"
    _cancelled_at(cancel_at, small_digits, session_dir, 6)
    cps = _training(_restore(session_dir))
    latest, previous = cps[-1], cps[-2]
    latest.url.write_bytes(latest.url.read_bytes()[: latest.url.stat().st_size // 3])  # a truncated write

    restored = _restore(session_dir, report_interval=1, checkpoint_interval=2)
    seen = []
    job = MLImageClassifier.resume(restored)
    job.on_progress(lambda p: seen.append(p.item_count) if p.phase == MLPhase.TRAINING else None)
    with pytest.warns(UserWarning, match=rf"{latest.url}.*damaged.*iteration {previous.iteration}"):
        model = job.result(timeout=300)
    assert seen[0] == previous.iteration + 1 and model._iterations == 20


def test_with_no_readable_checkpoint_training_starts_over_with_a_warning(small_digits, tmp_path, cancel_at):
    session_dir = tmp_path / "s"
    _cancelled_at(cancel_at, small_digits, session_dir, 3)
    for cp in _training(_restore(session_dir)):
        cp.url.write_bytes(b"PK\x03\x04 not really")
    restored = _restore(session_dir, report_interval=1, checkpoint_interval=2)
    seen = []
    job = MLImageClassifier.resume(restored)
    job.on_progress(lambda p: seen.append(p.item_count) if p.phase == MLPhase.TRAINING else None)
    with pytest.warns(UserWarning, match="starts again from iteration 1"):
        model = job.result(timeout=300)
    assert seen[0] == 1 and model._iterations == 20


# -- 7. the MLP head is reproducible --------------------------------------------------------------------------------
def _final_state(session_dir: Path) -> dict:
    cp = _training(_restore(session_dir))[-1]
    return load_tensors(cp.url, cp.sha256)


def _assert_same(a: dict, b: dict) -> None:
    for key, value in a["net"].items():
        assert torch.equal(value, b["net"][key]), key
    assert torch.equal(a["generator"], b["generator"])


def test_the_mlp_head_trains_the_same_twice_and_resumed_equals_uninterrupted(small_digits, tmp_path, cancel_at):
    torch.manual_seed(12345)  # whatever the global generator holds must not matter
    _train(small_digits, tmp_path / "a", 12, report_interval=1, checkpoint_interval=1)
    torch.rand(1000)
    _train(small_digits, tmp_path / "b", 12, report_interval=1, checkpoint_interval=1)
    uninterrupted = _final_state(tmp_path / "a")
    _assert_same(uninterrupted, _final_state(tmp_path / "b"))

    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "c", report_interval=1, checkpoint_interval=1)
    session = MLImageClassifier.make_training_session(data, _mlp(12), sp)
    cancel_at(MLImageClassifier, session, 5)
    torch.rand(777)  # the resumed run sees another global generator state
    MLImageClassifier.resume(_restore(tmp_path / "c", report_interval=1, checkpoint_interval=1)).result(timeout=300)
    _assert_same(uninterrupted, _final_state(tmp_path / "c"))


# -- 11. a bounded set of checkpoints ------------------------------------------------------------------------------
def test_a_session_keeps_the_latest_few_checkpoints_and_the_best_on_disk(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    job, _ = _train(small_digits, session_dir, 40, report_interval=1, checkpoint_interval=1)
    kept = _training(job.session)
    assert len(kept) <= KEEP_LATEST_CHECKPOINTS + 1
    assert [c.iteration for c in kept][-KEEP_LATEST_CHECKPOINTS:] == list(range(36, 41))
    best = max(job.session.history, key=lambda h: h["validation_accuracy"])["validation_accuracy"]
    assert max(c.metrics["validation_accuracy"] for c in kept) == best
    on_disk = sorted(p.name for p in (session_dir / "checkpoints").iterdir())
    assert on_disk == sorted(c.url.name for c in kept)
    assert [c.iteration for c in _training(_restore(session_dir))] == [c.iteration for c in kept]


def test_an_in_memory_session_keeps_a_bounded_number_of_weights(small_digits):
    job, _ = _train(small_digits, None, 40, report_interval=1, checkpoint_interval=1)
    with_weights = [c for c in job.session.checkpoints if c._state is not None]
    assert len(with_weights) <= KEEP_LATEST_CHECKPOINTS + 1
    assert with_weights[-1].iteration == 40 and MLImageClassifier.from_checkpoint(with_weights[-1])._iterations == 40


def test_a_let_go_checkpoint_says_so(small_digits):
    from createml_widgets.session import MLJob

    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    session = MLImageClassifier.make_training_session(data, _mlp(20), MLTrainingSessionParameters(
        report_interval=1, checkpoint_interval=1))
    seen = []
    job = MLJob(session).on_checkpoint(seen.append)
    job._start(background=False)
    job.result()
    assert [c.iteration for c in seen] == list(range(1, 21))
    let_go = [c for c in seen if c not in session.checkpoints]
    assert len(let_go) >= 20 - KEEP_LATEST_CHECKPOINTS - 1 and all(c._state is None for c in let_go)
    with pytest.raises(SessionError, match="let go"):
        MLImageClassifier.from_checkpoint(let_go[0])
