"""open_training_session: the engine decides whether a session folder is continued, refused or replaced — and
`train()` in a notebook gets the same protection the command line has."""
from __future__ import annotations

import json
import shutil

import pytest

from createml_widgets import (
    MLHandPoseClassifier,
    MLImageClassifier,
    MLPhase,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    SessionError,
    ValidationData,
)
from createml_widgets.session_open import SessionMismatchError, open_training_session

IC = MLImageClassifier


def _params(iterations=2, **kw):
    clf = IC.ClassifierType.multilayer_perceptron([16])
    return IC.ModelParameters(validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)),
                              max_iterations=iterations,
                              algorithm=IC.ModelAlgorithmType.transfer_learning(classifier=clf), **kw)


@pytest.fixture()
def trained(small_digits, tmp_path):
    """A session folder holding a finished 2-iteration session on small_digits."""
    data = IC.DataSource.labeled_directories(small_digits)
    sp = MLTrainingSessionParameters(tmp_path / "s", report_interval=1, checkpoint_interval=1)
    IC.train(data, _params(2), sp).result(timeout=300)
    return data, sp


def test_train_again_with_the_same_data_continues_and_trains_further(trained):
    data, sp = trained
    opened = IC.open_training_session(data, _params(4), sp)
    assert opened.state == "continued" and opened.differences == []
    assert opened.session.model_parameters.max_iterations == 4  # the iteration count may differ: trains further
    phases = []
    job = IC.train(data, _params(4), sp)
    job.on_phase(phases.append)
    model = job.result(timeout=300)
    assert model._iterations == 4 and MLPhase.EXTRACTING_FEATURES not in phases  # nothing extracted again
    kept = IC.open_training_session(data, _params(9), sp, keep_iterations=True)
    assert kept.session.model_parameters.max_iterations == 4  # the session's own count, as asked


def test_train_with_other_data_or_parameters_is_refused_naming_what_differs(trained, tmp_path):
    data, sp = trained
    before = (sp.directory / "session.json").read_bytes()
    other_folder = tmp_path / "other"
    shutil.copytree(data.value, other_folder)
    other = IC.DataSource.labeled_directories(other_folder)
    with pytest.raises(SessionMismatchError) as info:
        IC.train(other, _params(2), sp)  # used to continue the old session silently, ignoring `other`
    message = str(info.value)
    assert str(other_folder) in message and str(data.value) in message and "training data" in message
    assert "session_directory" in message and "remove_session_directory" in message  # the fixes
    flipped = _params(2, augmentation=IC.ImageAugmentationOptions.FLIP)
    with pytest.raises(SessionMismatchError, match=r"its augmentation is 0, not 32") as info:
        IC.train(data, flipped, sp)
    assert info.value.differences == ["its augmentation is 0, not 32"]
    assert isinstance(info.value, SessionError)
    assert (sp.directory / "session.json").read_bytes() == before  # nothing was changed or deleted


def test_a_session_of_another_task_is_refused(trained):
    data, sp = trained
    with pytest.raises(SessionMismatchError, match="MLImageClassifier session, not a MLHandPoseClassifier") as info:
        open_training_session(MLHandPoseClassifier, None, None, sp)
    assert info.value.stored_task == "MLImageClassifier"


def test_a_session_that_never_started_is_replaced_and_restart_discards_a_started_one(small_digits, trained):
    data, sp = trained
    opened = IC.open_training_session(data, _params(2), sp, restart=True)
    assert opened.state == "restarted" and opened.session.phase == MLPhase.INITIALIZED
    assert not (sp.directory / "checkpoints").exists()  # the old session's files are gone
    replaced = IC.open_training_session(data, _params(3, augmentation=IC.ImageAugmentationOptions.CROP), sp)
    assert replaced.state == "replaced" and replaced.differences == ["its augmentation is 0, not 1"]
    stored = json.loads((sp.directory / "session.json").read_text())
    assert stored["parameters"]["augmentation"] == 1 and stored["parameters"]["max_iterations"] == 3


def test_no_session_and_no_data_says_what_to_pass(tmp_path):
    with pytest.raises(SessionError, match="pass the training data"):
        IC.open_training_session(None, None, MLTrainingSessionParameters(tmp_path / "empty"))
