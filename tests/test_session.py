"""The shared engine: split rules, session parameters, checkpoints, jobs, cancel and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from createml_widgets import (
    JobCancelledError,
    MLCheckpoint,
    MLImageClassifier,
    MLPhase,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    ParameterError,
    SessionError,
    ValidationData,
)
from createml_widgets.data.split import stratified_split


@pytest.mark.parametrize("count, ratio", [(10, 0.0), (49, 0.0), (50, 0.10), (199, 0.10), (200, 0.05), (5000, 0.05)])
def test_automatic_split_follows_create_ml_table(count, ratio):
    assert MLSplitStrategy.automatic().resolve(count)[0] == ratio


def test_fixed_split_validates_its_ratio():
    assert MLSplitStrategy.fixed(0.2, seed=3).resolve(100) == (0.2, 3)
    with pytest.raises(ParameterError, match="ratio"):
        MLSplitStrategy.fixed(1.5).resolve(100)


def test_stratified_split_keeps_each_label_share():
    labels = ["a"] * 20 + ["b"] * 40
    train, val = stratified_split(labels, [0.75, 0.25], seed=1)
    assert sorted(train + val) == list(range(60))
    assert sum(labels[i] == "a" for i in val) == 5 and sum(labels[i] == "b" for i in val) == 10
    assert stratified_split(labels, [0.75, 0.25], seed=1) == [train, val]


@pytest.mark.parametrize("field", ["report_interval", "checkpoint_interval", "iterations"])
def test_session_parameters_reject_non_positive(field):
    with pytest.raises(ParameterError, match=field):
        MLTrainingSessionParameters(**{field: 0}).validate()


def test_checkpoint_round_trips_through_json(tmp_path):
    import datetime as dt

    cp = MLCheckpoint(MLPhase.TRAINING, 7, dt.datetime(2026, 1, 2, 3, 4, 5), tmp_path / "checkpoints" / "x.pt",
                      {"loss": 0.5})
    d = json.loads(json.dumps(cp.to_dict(tmp_path)))
    assert d["url"] == "checkpoints/x.pt"
    back = MLCheckpoint.from_dict(d, tmp_path)
    assert (back.phase, back.iteration, back.url, back.metrics) == (cp.phase, 7, cp.url, {"loss": 0.5})


def _params(iterations=8, **kw):
    clf = MLImageClassifier.ClassifierType.multilayer_perceptron([32])
    return MLImageClassifier.ModelParameters(
        validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)), max_iterations=iterations,
        algorithm=MLImageClassifier.ModelAlgorithmType.transfer_learning(classifier=clf), **kw)


def test_async_job_reports_phases_progress_checkpoints_and_result(small_digits, tmp_path):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "s", report_interval=2, checkpoint_interval=4)
    job = MLImageClassifier.train(data, _params(8), sp)
    phases, progress, checkpoints = [], [], []
    job.on_phase(phases.append).on_progress(progress.append).on_checkpoint(checkpoints.append)
    model = job.result(timeout=300)
    assert isinstance(model, MLImageClassifier)
    assert phases[-1] == MLPhase.EVALUATING and MLPhase.TRAINING in phases
    training = [p for p in progress if p.phase == MLPhase.TRAINING]
    assert [p.item_count for p in training] == [2, 4, 6, 8]
    assert all(p.total_item_count == 8 and "loss" in p.metrics for p in training)
    assert "validation_accuracy" in training[-1].metrics
    assert [c.iteration for c in checkpoints] == [4, 8]
    assert all(c.url.exists() for c in checkpoints)
    assert job.done() and not job.is_canceled and job.start_date is not None


def test_cancel_then_resume_finishes_without_restarting(small_digits, tmp_path, cancel_at):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "s", report_interval=1, checkpoint_interval=1000)
    session = MLImageClassifier.make_training_session(data, _params(400), sp)
    stopped_at = cancel_at(MLImageClassifier, session, 3)
    assert 3 <= stopped_at < 400
    assert session.latest_training_checkpoint().iteration == stopped_at  # cancel keeps the work

    restored = MLImageClassifier.restore_training_session(sp)
    assert restored.phase == MLPhase.TRAINING and restored.iteration == stopped_at
    first = []
    job2 = MLImageClassifier.resume(restored)
    job2.on_progress(lambda p: first.append(p.item_count) if p.phase == MLPhase.TRAINING else None)
    model = job2.result(timeout=300)
    assert first[0] == stopped_at + 1
    assert model._iterations == 400 and restored.iteration == 400


def test_session_iterations_cap_training(small_digits):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    job = MLImageClassifier.train(data, _params(50), MLTrainingSessionParameters(iterations=6))
    assert job.result(timeout=300)._iterations == 6


def test_from_checkpoint_and_remove_checkpoints(small_digits, tmp_path):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "s", checkpoint_interval=2)
    job = MLImageClassifier.train(data, _params(6), sp)
    final = job.result(timeout=300)
    session = job.session
    training = [c for c in session.checkpoints if c.phase == MLPhase.TRAINING]
    assert [c.iteration for c in training] == [2, 4, 6]
    early = MLImageClassifier.from_checkpoint(training[0])
    assert early._iterations == 2 and early.class_labels == final.class_labels
    last = MLImageClassifier.from_checkpoint(training[-1])
    probe = str(next((small_digits / "5").iterdir()))
    assert last.prediction_probabilities(probe) == pytest.approx(final.prediction_probabilities(probe), abs=1e-5)
    extraction = [c for c in session.checkpoints if c.phase == MLPhase.EXTRACTING_FEATURES]
    with pytest.raises(SessionError, match="no model"):
        MLImageClassifier.from_checkpoint(extraction[0])

    session.remove_checkpoints(lambda c: c.phase == MLPhase.TRAINING and c.iteration < 6)
    assert [c.iteration for c in session.checkpoints if c.phase == MLPhase.TRAINING] == [6]
    assert not training[0].url.exists() and training[-1].url.exists()
    on_disk = MLImageClassifier.restore_training_session(sp)
    assert [c.iteration for c in on_disk.checkpoints if c.phase == MLPhase.TRAINING] == [6]


def test_in_memory_session_checkpoints_work_without_a_directory(small_digits):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    job = MLImageClassifier.train(data, _params(4), MLTrainingSessionParameters(checkpoint_interval=2))
    job.result(timeout=300)
    cp = [c for c in job.session.checkpoints if c.phase == MLPhase.TRAINING][0]
    assert cp.url is None and MLImageClassifier.from_checkpoint(cp)._iterations == 2


def test_existing_session_directory_is_not_overwritten(small_digits, tmp_path):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "s")
    MLImageClassifier.make_training_session(data, _params(2), sp)
    with pytest.raises(SessionError, match="restore_training_session"):
        MLImageClassifier.make_training_session(data, _params(2), sp)
    with pytest.raises(SessionError, match="no training session"):
        MLImageClassifier.restore_training_session(MLTrainingSessionParameters(tmp_path / "empty"))


def test_reuse_extracted_features_skips_extraction(small_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "fresh-cache"))  # cold cache on purpose
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    first = MLImageClassifier.train(data, _params(2), MLTrainingSessionParameters(tmp_path / "a"))
    first.result(timeout=300)
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "other-cache"))  # and no cache to lean on
    second = MLImageClassifier.make_training_session(data, _params(3), MLTrainingSessionParameters(tmp_path / "b"))
    second.reuse_extracted_features(first.session)
    phases = []
    job = MLImageClassifier.resume(second)
    job.on_phase(phases.append)
    job.result(timeout=300)
    assert MLPhase.EXTRACTING_FEATURES not in phases
    assert not (tmp_path / "other-cache").exists()


def _unwritable_folder(tmp_path) -> Path:
    """An existing folder this process may not write into: a read-only one, or (as root, who ignores
    permission bits, as in CI) sysfs, which refuses new files to everybody."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / ".probe").touch()
    except PermissionError:
        return folder
    (folder / ".probe").unlink()
    if Path("/sys").is_dir():
        try:
            (Path("/sys") / ".cmlw-probe").touch()
        except OSError:
            return Path("/sys")
    pytest.skip("no folder here refuses writes to this process")


def test_unwritable_session_directory_is_a_session_error_naming_it(small_digits, tmp_path):
    folder = _unwritable_folder(tmp_path)
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    try:
        with pytest.raises(SessionError, match=f"cannot write to the session directory {folder}") as info:
            MLImageClassifier.make_training_session(data, _params(2), MLTrainingSessionParameters(folder))
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(SessionError, match=str(folder)):
            MLImageClassifier.train(data, _params(2), MLTrainingSessionParameters(folder))
    finally:
        (tmp_path / "locked").chmod(0o700)


def _logistic(iterations):
    """Default classifier (logistic regression, L-BFGS), a fixed validation split."""
    return MLImageClassifier.ModelParameters(
        validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)), max_iterations=iterations)


def test_default_logistic_regressor_checkpoints_resume_and_from_checkpoint(small_digits, tmp_path, cancel_at):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    probes = [str(p) for label in ("0", "1", "5") for p in sorted((small_digits / label).iterdir())[:2]]
    reference = MLImageClassifier.train(data, _logistic(12), MLTrainingSessionParameters(tmp_path / "ref"))
    want = [reference.result(timeout=300).prediction_probabilities(p) for p in probes]

    sp = MLTrainingSessionParameters(tmp_path / "s", report_interval=1, checkpoint_interval=4)
    session = MLImageClassifier.make_training_session(data, _logistic(12), sp)
    stopped = cancel_at(MLImageClassifier, session, 5)
    assert 5 <= stopped < 12
    restored = MLImageClassifier.restore_training_session(sp)
    assert restored.phase == MLPhase.TRAINING and restored.iteration == stopped
    model = MLImageClassifier.resume(restored).result(timeout=300)
    assert model._iterations == 12
    # The resumed L-BFGS continues from its saved history: the same model as an uninterrupted run.
    for p, expected in zip(probes, want):
        assert model.prediction_probabilities(p) == pytest.approx(expected, abs=1e-4)

    on_disk = MLImageClassifier.restore_training_session(sp)
    training = sorted((c for c in on_disk.checkpoints if c.phase == MLPhase.TRAINING), key=lambda c: c.iteration)
    assert [c.iteration for c in training] == sorted({4, 8, 12, stopped})
    assert all(c.url.exists() and c.url.parent == tmp_path / "s" / "checkpoints" for c in training)
    early = MLImageClassifier.from_checkpoint(training[0])
    assert early._iterations == 4 and early.class_labels == model.class_labels
    last = MLImageClassifier.from_checkpoint(training[-1])
    for p, expected in zip(probes, want):
        assert last.prediction_probabilities(p) == pytest.approx(expected, abs=1e-4)
    assert early.training_metrics.accuracy <= last.training_metrics.accuracy


def test_cancel_during_feature_extraction_then_resume_extracts_only_the_rest(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "cold-cache"))
    files = {label: sorted((digits_dir / label).iterdir())[:20] for label in ("2", "6", "7")}  # 60 photos
    data = MLImageClassifier.DataSource.files_by_label(files)
    params = MLImageClassifier.ModelParameters(max_iterations=3, validation=ValidationData.none())
    sp = MLTrainingSessionParameters(tmp_path / "s", checkpoint_interval=100)
    session = MLImageClassifier.make_training_session(data, params, sp)
    job = MLImageClassifier.resume(session)
    job.on_progress(lambda p: job.cancel() if p.phase == MLPhase.EXTRACTING_FEATURES else None)
    with pytest.raises(JobCancelledError, match="feature extraction"):
        job.result(timeout=300)
    assert session.phase == MLPhase.EXTRACTING_FEATURES and session.iteration == 32  # one batch of 32
    extraction = [c for c in session.checkpoints if c.phase == MLPhase.EXTRACTING_FEATURES]
    assert [c.iteration for c in extraction] == [32] and extraction[0].url.exists()

    restored = MLImageClassifier.restore_training_session(sp)
    assert len(restored.features.features) == 32
    job2 = MLImageClassifier.resume(restored)
    model = job2.result(timeout=300)
    # The 32 extracted items came from the session; only the other 28 were asked of the extractor.
    assert restored.summary["extraction"] == {"items": 60, "resumed_from": 32, "from_cache": 0, "extracted": 28}
    assert model.training_metrics.count == 60 and model._iterations == 3


def test_in_memory_checkpoints_keep_the_weights_of_their_iteration(small_digits):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    job = MLImageClassifier.train(data, _params(6), MLTrainingSessionParameters(checkpoint_interval=2))
    final = job.result(timeout=300)
    cps = [c for c in job.session.checkpoints if c.phase == MLPhase.TRAINING]
    assert [c.iteration for c in cps] == [2, 4, 6] and all(c.url is None for c in cps)
    probe = str(sorted((small_digits / "1").iterdir())[0])
    early = MLImageClassifier.from_checkpoint(cps[0]).prediction_probabilities(probe)
    last = MLImageClassifier.from_checkpoint(cps[-1]).prediction_probabilities(probe)
    assert last == pytest.approx(final.prediction_probabilities(probe), abs=1e-6)
    assert max(abs(early[k] - last[k]) for k in early) > 1e-3  # not the final weights seen through a reference


def test_training_in_the_foreground_shows_bars_without_rates(small_digits, capsys):
    """The bars of `MLImageClassifier(data, parameters)` say how far and how long, not items a second (cached
    features come at millions a second, which tells a user nothing)."""
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    MLImageClassifier(data, _params(2))
    err = capsys.readouterr().err
    assert "Training" in err and "2/2" in err, err[-500:]
    assert "it/s" not in err and "s/it" not in err, err[-500:]
