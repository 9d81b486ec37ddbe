"""Sessions as a careless or hostile user meets them: discarding, paths out of the folder, two runs at once,
the iteration bound, leftovers of kills, data errors that say what to change (issue 11)."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from createml_widgets import (
    DataSourceError,
    MLImageClassifier,
    MLPhase,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    SessionError,
    ValidationData,
)
from createml_widgets.session import remove_session_directory


def _mlp(iterations: int, ratio: float = 0.25) -> MLImageClassifier.ModelParameters:
    clf = MLImageClassifier.ClassifierType.multilayer_perceptron([32])
    return MLImageClassifier.ModelParameters(
        validation=ValidationData.split(MLSplitStrategy.fixed(ratio, seed=0)), max_iterations=iterations,
        algorithm=MLImageClassifier.ModelAlgorithmType.transfer_learning(classifier=clf))


def _trained(data_dir: Path, session_dir: Path, iterations: int = 4, **sp) -> MLImageClassifier:
    data = MLImageClassifier.DataSource.labeled_directories(data_dir)
    sp.setdefault("checkpoint_interval", 2)
    job = MLImageClassifier.train(data, _mlp(iterations), MLTrainingSessionParameters(session_dir, **sp))
    return job.result(timeout=300)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# -- 1. discarding removes only what the session wrote ------------------------------------------------------------
def test_discarding_a_session_in_a_folder_of_the_users_files_deletes_nothing_and_names_them(small_digits, tmp_path):
    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "Model.mlmodel").write_bytes(b"a model I made")
    shutil.copytree(small_digits / "0", folder / "photos")
    _trained(small_digits, folder)  # the session lives among the user's files
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    with pytest.raises(SessionError, match="did not write") as info:
        remove_session_directory(folder)
    message = str(info.value)
    assert "notes.txt" in message and "Model.mlmodel" in message and "photos/" in message
    assert "nothing was deleted" in message
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # not one byte gone


def test_discarding_a_session_removes_its_own_files_and_the_folder_it_created(small_digits, tmp_path):
    session_dir = tmp_path / "nested" / "s"
    _trained(small_digits, session_dir)
    # what a kill -9 in the middle of writing a checkpoint leaves: a temporary file of the session
    (session_dir / "checkpoints" / ".training-00004.pt.k3j4h5g6").write_bytes(b"half a checkpoint")
    remove_session_directory(session_dir)
    assert not session_dir.exists() and (tmp_path / "nested").is_dir()  # the parent was not the session's


def test_discarding_keeps_a_folder_the_user_made_and_refuses_a_folder_that_is_no_session(small_digits, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    _trained(small_digits, mine)
    remove_session_directory(mine)
    assert mine.is_dir() and list(mine.iterdir()) == []

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.jpg").write_bytes(b"x")
    with pytest.raises(SessionError, match="not a training session"):
        remove_session_directory(plain)
    assert (plain / "a.jpg").exists()


def test_a_file_dropped_into_the_session_folder_later_is_kept(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    _trained(small_digits, session_dir)
    (session_dir / "checkpoints" / "keep-me.txt").write_text("mine")
    with pytest.raises(SessionError, match="checkpoints/keep-me.txt"):
        remove_session_directory(session_dir)
    assert (session_dir / "checkpoints" / "keep-me.txt").read_text() == "mine"
    assert (session_dir / "session.json").exists()


# -- 2. paths in session.json that lead out of the folder ---------------------------------------------------------
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_checkpoint_urls_outside_the_session_are_neither_read_nor_deleted(small_digits, tmp_path, where):
    session_dir = tmp_path / "s"
    _trained(small_digits, session_dir)
    victim = tmp_path / "victim.pt"
    shutil.copy(next((session_dir / "checkpoints").iterdir()), victim)  # even a valid checkpoint outside
    state = json.loads((session_dir / "session.json").read_text())
    training = [c for c in state["checkpoints"] if c["phase"] == "training"]
    training[0]["url"] = "../victim.pt" if where == "relative" else str(victim)
    (session_dir / "session.json").write_text(json.dumps(state))

    with pytest.raises(SessionError, match="outside the session folder"):
        MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir))
    assert victim.exists()


def test_remove_checkpoints_refuses_a_checkpoint_pointing_outside(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    model = _trained(small_digits, session_dir)
    assert model is not None
    session = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    session.checkpoints[-1].url = victim
    with pytest.raises(SessionError, match="outside the session folder"):
        session.remove_checkpoints(lambda c: True)
    assert victim.read_text() == "precious"
    # a link inside the folder that leads out is outside too
    link = session_dir / "checkpoints" / "training-00099.pt"
    link.symlink_to(victim)
    session.checkpoints[-1].url = link
    with pytest.raises(SessionError, match="outside the session folder"):
        session.remove_checkpoints(lambda c: True)
    assert victim.read_text() == "precious"


def test_feature_chunk_names_outside_the_session_are_refused(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    _trained(small_digits, session_dir)
    outside = tmp_path / "elsewhere.npz"
    shutil.copy(next((session_dir / "features").iterdir()), outside)
    state = json.loads((session_dir / "session.json").read_text())
    state["features"]["chunks"][0] = "../elsewhere.npz"
    (session_dir / "session.json").write_text(json.dumps(state))
    with pytest.raises(SessionError, match="elsewhere.npz.*outside the session folder"):
        MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir))


# -- 3. one run at a time on a session folder ----------------------------------------------------------------------
def test_a_second_run_on_a_busy_session_folder_is_refused(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(session_dir, report_interval=1, checkpoint_interval=1000, iterations=100_000)
    first = MLImageClassifier.train(data, _mlp(100_000), sp)
    training = threading.Event()
    first.on_progress(lambda p: training.set() if p.phase == MLPhase.TRAINING else None)
    try:
        assert training.wait(300)
        second = MLImageClassifier.train(data, _mlp(100_000), MLTrainingSessionParameters(session_dir))
        with pytest.raises(SessionError, match="another training run is using the session folder"):
            second.result(timeout=60)
        assert not first.done()
    finally:
        first.cancel()
        with pytest.raises(Exception):  # noqa: B017 - JobCancelledError
            first.result(timeout=120)
    # once the first run stopped, the folder is free again
    again = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir, iterations=100_000))
    again.model_parameters.max_iterations = again.iteration + 1
    model = MLImageClassifier.resume(again).result(timeout=120)
    assert model._iterations == again.iteration


# -- 6. the session's iteration bound ---------------------------------------------------------------------------------
def test_a_session_bound_below_the_model_iterations_is_said_before_training(small_digits):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    with pytest.warns(UserWarning, match=r"max_iterations=8.*MLTrainingSessionParameters.iterations=5"):
        model = MLImageClassifier.train(data, _mlp(8), MLTrainingSessionParameters(iterations=5)).result(timeout=300)
    assert model._iterations == 5


def test_the_dashboard_passes_the_iterations_asked_as_the_session_bound(small_digits, tmp_path):
    from createml_widgets.widgets import TrainerApp

    app = TrainerApp(root=tmp_path)  # small_digits is tmp_path / "digits"
    app.picker.navigate("digits")
    app.form.fields["max_iterations"].input.value = "1500"
    job = app.train()
    try:
        assert job.session.parameters.iterations == 1500
    finally:
        job.cancel()
        job.exception(timeout=300)  # wait for it to stop


# -- 18. leftovers of kills --------------------------------------------------------------------------------------------
def test_temporary_and_unlisted_checkpoint_files_left_by_a_kill_are_removed_on_the_next_run(small_digits, tmp_path):
    session_dir = tmp_path / "s"
    _trained(small_digits, session_dir, iterations=4)
    checkpoints = session_dir / "checkpoints"
    # a kill between mkstemp and the rename leaves the temporary file; a kill between writing a checkpoint and
    # listing it in session.json leaves a file nothing names
    (checkpoints / ".training-00006.pt.a1b2c3d4").write_bytes(b"half")
    (session_dir / ".session.json.zz9y8x7w").write_bytes(b"{")
    manifest = json.loads((session_dir / "session-files.json").read_text())
    manifest["files"] += ["checkpoints/training-00005.pt", "checkpoints/training-00006.pt"]  # listed before written
    (session_dir / "session-files.json").write_text(json.dumps(manifest))
    shutil.copy(checkpoints / "training-00004.pt", checkpoints / "training-00005.pt")
    (checkpoints / "unrelated.txt").write_text("not the session's")  # never touched

    restored = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(session_dir,
                                                                                      checkpoint_interval=2))
    restored.model_parameters.max_iterations = 6
    MLImageClassifier.resume(restored).result(timeout=300)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["training-00002.pt", "training-00004.pt",
                                                            "training-00006.pt", "unrelated.txt"]
    assert not (session_dir / ".session.json.zz9y8x7w").exists()


# -- 17 and 18: data errors that say what happened and what to change ---------------------------------------------
def test_a_validation_split_that_takes_a_whole_label_says_so(small_digits):
    data = MLImageClassifier.DataSource.labeled_directories(small_digits)
    params = MLImageClassifier.ModelParameters(validation=ValidationData.split(MLSplitStrategy.fixed(0.99, seed=0)),
                                               max_iterations=2)
    with pytest.raises(DataSourceError) as info:
        MLImageClassifier.train(data, params).result(timeout=300)
    message = str(info.value)
    assert "validation split" in message and "smaller ratio" in message and "its files: " not in message


def test_a_folder_listed_in_files_by_label_is_named_with_the_fix(small_digits, tmp_path):
    files = {"0": [small_digits / "0"], "1": sorted((small_digits / "1").iterdir())}
    data = MLImageClassifier.DataSource.files_by_label(files)
    params = MLImageClassifier.ModelParameters(validation=ValidationData.none(), max_iterations=2)
    with pytest.raises(DataSourceError) as info:
        MLImageClassifier.train(data, params).result(timeout=300)
    message = str(info.value)
    assert str(small_digits / "0") in message and "a folder" in message and "labeled_directories" in message


def test_messages_about_loose_images_use_plain_english(small_digits, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for photo in sorted((small_digits / "0").iterdir())[:3]:
        shutil.copy(photo, loose / photo.name)
    with pytest.raises(DataSourceError) as info:
        MLImageClassifier.train(MLImageClassifier.DataSource.labeled_directories(loose)).result(timeout=60)
    assert "an images" not in str(info.value) and "3 images directly" in str(info.value)
