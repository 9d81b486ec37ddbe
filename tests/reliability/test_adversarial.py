"""A second adversarial pass over the session engine (issue 11), as a hostile or careless user meets it: a session
folder inside the photos, an edited or truncated session-files.json, the synchronous initializer asking for more
than 1000 iterations, a folder named in a hand task's annotation file."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest

from createml_widgets import (
    DataSourceError,
    MLHandPoseClassifier,
    MLImageClassifier,
    MLTrainingSessionParameters,
    SessionError,
    ValidationData,
    cli,
)
from createml_widgets.session import remove_session_directory

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"


def train(data, out, *options) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(["train", "image", str(data), "--out", str(out), *map(str, options)])
    return rc, err.getvalue()


def one_error_line(rc, err: str, *names) -> str:
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def _params(iterations: int = 1) -> MLImageClassifier.ModelParameters:
    return MLImageClassifier.ModelParameters(validation=ValidationData.none(), max_iterations=iterations)


def _photos(root: Path) -> Path:
    """3 labels x 2 of the bundled photos."""
    for label in ("0", "1", "5"):
        (root / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:2]:
            shutil.copy(photo, root / label / photo.name)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- a session folder inside the training data ------------------------------------------------------------------
def test_a_model_written_into_the_photo_folder_is_refused_before_anything_is_written(tmp_path):
    # `--out photos/Model.mlmodel` puts the session (photos/Model.session) among the label folders: its folder became a
    # label "Model.session" with "no images; add some or remove the folder"
    photos = _photos(tmp_path / "photos")
    before = _tree(photos)
    rc, err = train(photos, photos / "Model.mlmodel", "--iterations", 1, "--validation", "none")
    line = one_error_line(rc, err, photos / "Model.session", photos)
    assert "inside the training data folder" in line and "--out or --session outside" in line
    assert _tree(photos) == before and sorted(p.name for p in photos.iterdir()) == ["0", "1", "5"]


def test_the_data_folder_as_its_own_session_folder_is_refused(tmp_path):
    # `--session .` run from inside the photo folder: the first run trained, the next one found labels "checkpoints"
    # and "features"
    photos = _photos(tmp_path / "photos")
    before = _tree(photos)
    rc, err = train(photos, tmp_path / "Model.mlmodel", "--session", photos, "--iterations", 1,
                       "--validation", "none")
    one_error_line(rc, err, "inside the training data folder")
    assert _tree(photos) == before
    data = MLImageClassifier.DataSource.labeled_directories(photos)
    with pytest.raises(SessionError, match="inside the training data folder"):
        MLImageClassifier.train(data, _params(), MLTrainingSessionParameters(photos / "0" / "s"))
    assert _tree(photos) == before


# -- an edited or truncated list of the session's files ---------------------------------------------------------------
def _session_in_project(tmp_path, iterations: int = 1) -> tuple[Path, Path]:
    photos = _photos(tmp_path / "photos")
    project = tmp_path / "project"
    (project / "photos").mkdir(parents=True)
    (project / "notes.txt").write_text("my notes")
    shutil.copy(next((photos / "0").iterdir()), project / "photos" / "a.jpg")
    MLImageClassifier.train(MLImageClassifier.DataSource.labeled_directories(photos), _params(iterations),
                            MLTrainingSessionParameters(project, checkpoint_interval=1)).result(timeout=300)
    return photos, project


def test_an_edited_file_list_naming_the_users_files_deletes_none_of_them(tmp_path):
    _, project = _session_in_project(tmp_path)
    manifest = json.loads((project / "session-files.json").read_text())
    manifest["files"] += ["notes.txt", "photos/a.jpg"]
    (project / "session-files.json").write_text(json.dumps(manifest))
    before = {name: data for name, data in _tree(project).items() if name in ("notes.txt", "photos/a.jpg")}

    with pytest.raises(SessionError, match="did not write") as info:
        remove_session_directory(project)
    assert "notes.txt" in str(info.value) and "photos/" in str(info.value)
    remove_session_directory(project, keep_others=True)  # the session's own files go, the user's stay
    assert _tree(project) == before


def test_a_truncated_file_list_neither_strands_the_session_nor_deletes_the_users_files(tmp_path):
    photos, project = _session_in_project(tmp_path)
    manifest = project / "session-files.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    sp = MLTrainingSessionParameters(project)
    with pytest.warns(UserWarning, match="session-files.json is damaged"):
        session = MLImageClassifier.restore_training_session(sp)
        session.model_parameters.max_iterations = 2
        model = MLImageClassifier.resume(session).result(timeout=300)
    assert model._iterations == 2
    json.loads(manifest.read_text())  # written whole again
    with pytest.raises(SessionError, match="notes.txt"):
        remove_session_directory(project)
    remove_session_directory(project, keep_others=True)
    assert sorted(_tree(project)) == ["notes.txt", "photos/a.jpg"]


# -- the iterations asked ------------------------------------------------------------------------------------------
def test_the_synchronous_initializer_trains_every_iteration_asked(tmp_path):
    # MLImageClassifier(data, parameters) takes no session parameters, so a bound of 1000 could not be raised: it
    # trained 1000 and advised passing MLTrainingSessionParameters(iterations=1002)
    data = MLImageClassifier.DataSource.labeled_directories(_photos(tmp_path / "photos"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*session stops at")
        model = MLImageClassifier(data, _params(1002))
    assert model._iterations == 1002


# -- a folder named where a hand task expects a file -----------------------------------------------------------------
def test_a_folder_named_in_a_hand_annotation_file_is_said_to_be_a_folder(tmp_path):
    (tmp_path / "photos" / "peace").mkdir(parents=True)
    (tmp_path / "photos" / "fist").mkdir()
    annotation = tmp_path / "hands.csv"
    annotation.write_text("image,label\npeace,peace\nfist,fist\n")
    data = MLHandPoseClassifier.DataSource.directory_with_images_and_annotation(tmp_path / "photos", annotation,
                                                                                 "image", "label")
    with pytest.raises(DataSourceError) as info:
        MLHandPoseClassifier.train(data, MLHandPoseClassifier.ModelParameters(maximum_iterations=1)).result(timeout=120)
    message = str(info.value)
    assert str(tmp_path / "photos" / "peace") in message and "a folder, not an image file" in message
    assert "labeled_directories" in message and "does not exist" not in message


# -- a relative session folder -------------------------------------------------------------------------------------------
def test_a_relative_session_folder_keeps_a_bounded_set_of_checkpoints_on_disk(tmp_path, monkeypatch):
    # MLTrainingSessionParameters("my.session"): the files to delete were named "my.session/my.session/...", so every
    # checkpoint stayed on disk (and in the file list) however many iterations ran
    data = MLImageClassifier.DataSource.labeled_directories(_photos(tmp_path / "photos"))
    monkeypatch.chdir(tmp_path)
    sp = MLTrainingSessionParameters("my.session", checkpoint_interval=1)
    MLImageClassifier.train(data, _params(9), sp).result(timeout=300)
    on_disk = sorted(p.name for p in (tmp_path / "my.session" / "checkpoints").iterdir())
    assert on_disk == [f"training-{i:05d}.pt" for i in range(5, 10)]
    listed = json.loads((tmp_path / "my.session" / "session-files.json").read_text())["files"]
    assert sorted(n for n in listed if n.startswith("checkpoints/")) == [f"checkpoints/{n}" for n in on_disk]
    session = MLImageClassifier.restore_training_session(MLTrainingSessionParameters("my.session"))
    session.remove_checkpoints(lambda c: c.iteration < 9 and c.phase.value == "training")
    assert sorted(p.name for p in (tmp_path / "my.session" / "checkpoints").iterdir()) == ["training-00009.pt"]


def test_an_edited_checkpoint_url_naming_a_file_in_the_folder_does_not_delete_it(tmp_path):
    # session.json's url "notes.txt" is inside the folder, so the confinement let remove_checkpoints delete it
    _, project = _session_in_project(tmp_path, iterations=2)
    state = json.loads((project / "session.json").read_text())
    training = [c for c in state["checkpoints"] if c["phase"] == "training"]
    for checkpoint, name in zip(training, ["notes.txt", "session-files.json"]):
        checkpoint["url"] = name
    (project / "session.json").write_text(json.dumps(state))
    session = MLImageClassifier.restore_training_session(MLTrainingSessionParameters(project))
    session.remove_checkpoints(lambda c: c.phase.value == "training")
    assert (project / "notes.txt").read_text() == "my notes"
    assert json.loads((project / "session-files.json").read_text())["files"]


def test_writing_a_package_over_a_folder_of_the_users_files_changes_nothing(tmp_path):
    """An .mlpackage is a folder: writing one where a folder of the user's files has that name must not
    delete those files (an earlier package of that name is still replaced)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from createml_widgets.export.coreml import write_model

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3))])
    def prog(x):
        return mb.relu(x=x, name="y")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15)
    folder = tmp_path / "Model.mlpackage"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match="not a Core ML package"):
        write_model(model, folder)
    assert (folder / "notes.txt").read_text() == "mine"

    package = tmp_path / "Earlier.mlpackage"
    write_model(model, package)
    write_model(model, package)  # an earlier package is replaced
    assert (package / "Manifest.json").is_file()
