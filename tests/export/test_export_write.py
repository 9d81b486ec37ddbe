"""write_model / format_for_path: suffixes, formats, folders, atomic replacement, quiet conversion."""
from __future__ import annotations

from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from export_helpers import POSE_LABELS, keypoints

from createml_widgets.export import evaluate, format_for_path, keypoint_classifier_model, write_model
from createml_widgets.nets import HandPoseGCN


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.mlmodel", "neuralnetwork"), ("a.mlpackage", "mlprogram"), ("dir/B.MLMODEL", "neuralnetwork"),
    ("x.y.mlpackage/", "mlprogram"),
])
def test_format_for_path(name, fmt):
    assert format_for_path(name) == fmt


@pytest.mark.parametrize("name", ["model.onnx", "model", "model.mlmodelc", "model.mlmodel.zip"])
def test_format_for_path_rejects_other_suffixes(name):
    with pytest.raises(ValueError) as info:
        format_for_path(name)
    message = str(info.value)
    assert name in message and ".mlmodel" in message and ".mlpackage" in message


@pytest.mark.parametrize("name", ["Hand.onnx", "Hand.mlmodelc", "Hand"])
def test_wrong_suffix_is_rejected_and_nothing_written(pose_models, tmp_path, name):
    target = tmp_path / name
    with pytest.raises(ValueError) as info:
        write_model(pose_models["neuralnetwork"], target)
    assert str(target) in str(info.value)
    assert ".mlmodel" in str(info.value) and ".mlpackage" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_format_and_suffix_must_agree(pose_models, tmp_path):
    with pytest.raises(ValueError, match="neural network"):
        write_model(pose_models["neuralnetwork"], tmp_path / "Hand.mlpackage")
    with pytest.raises(ValueError, match="ML program"):
        write_model(pose_models["mlprogram"], tmp_path / "Hand.mlmodel")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["neuralnetwork", "mlprogram"])
def test_missing_folders_are_created(pose_models, tmp_path, fmt):
    target = tmp_path / "a" / "b" / ("Hand.mlmodel" if fmt == "neuralnetwork" else "Hand.mlpackage")
    assert write_model(pose_models[fmt], target) == target
    assert target.exists()
    ct.models.MLModel(str(target), skip_model_load=True)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary left over


@pytest.mark.parametrize("suffix", [".mlmodel", ".mlpackage"])
def test_parent_that_is_a_file_raises_an_os_error_naming_the_path(pose_models, tmp_path, suffix):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("I am a file")
    target = blocker / f"Hand{suffix}"
    model = pose_models["neuralnetwork" if suffix == ".mlmodel" else "mlprogram"]
    with pytest.raises(OSError) as info:
        write_model(model, target)
    assert str(target) in str(info.value)
    assert blocker.read_text() == "I am a file"


def _unwritable_folder(tmp_path) -> Path:
    """A folder this process may not write into: a read-only one, or (as root, who ignores
    permission bits, as in CI) sysfs, which refuses new files to everybody."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return folder
    probe.unlink()
    if Path("/sys").is_dir():
        try:
            (Path("/sys") / ".cmlw-probe").touch()
        except PermissionError:
            return Path("/sys")
    pytest.skip("no folder here refuses writes to this process")


@pytest.mark.parametrize("fmt", ["neuralnetwork", "mlprogram"])
def test_unwritable_folder_raises_permission_error_naming_the_file(pose_models, tmp_path, fmt):
    folder = _unwritable_folder(tmp_path)
    try:
        target = folder / ("Hand.mlmodel" if fmt == "neuralnetwork" else "Hand.mlpackage")
        with pytest.raises(PermissionError) as info:
            write_model(pose_models[fmt], target)
        assert str(target) in str(info.value)
        assert not target.exists()
    finally:
        (tmp_path / "locked").chmod(0o700)


@pytest.mark.parametrize("fmt", ["neuralnetwork", "mlprogram"])
def test_existing_model_is_replaced(tmp_path, fmt):
    """Writing over an earlier export replaces it completely and leaves no temporaries behind."""
    suffix = ".mlmodel" if fmt == "neuralnetwork" else ".mlpackage"
    target = tmp_path / f"Hand{suffix}"
    poses = keypoints(1, 3)
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = HandPoseGCN(len(POSE_LABELS)).eval()
        write_model(keypoint_classifier_model(net, POSE_LABELS, 1, fmt=fmt), target)
        result = evaluate(target, {"poses": poses})["labelProbabilities"]
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(poses)[None]), 1)[0].numpy()
        np.testing.assert_allclose([result[k] for k in POSE_LABELS], expected, atol=1e-4)
        results.append(result)
    assert results[0] != results[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_conversion_and_writing_are_quiet(tmp_path, capfd):
    torch.manual_seed(0)
    net = HandPoseGCN(2).eval()
    for fmt, name in (("neuralnetwork", "q.mlmodel"), ("mlprogram", "q.mlpackage")):
        write_model(keypoint_classifier_model(net, ["a", "b"], 1, fmt=fmt), tmp_path / name)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Converting" not in err and "Running MIL" not in err and "%|" not in err  # no progress bars
    assert "Warning" not in err and "warning" not in err
