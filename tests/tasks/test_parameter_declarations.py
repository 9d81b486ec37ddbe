"""One declaration per parameter (the ModelParameters field's metadata) reaches validate(), the parameter form and
the command line's `train TASK` options — and a field added with a declaration reaches all three with no other edit."""
from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys

import pytest

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier, cli
from createml_widgets.errors import ParameterError
from createml_widgets.session_open import session_differences
from createml_widgets.tasks import registry
from createml_widgets.tasks._fields import declared_parameters
from createml_widgets.widgets import ParameterForm

CLASSES = {"image": MLImageClassifier, "hand_pose": MLHandPoseClassifier, "hand_action": MLHandActionClassifier}


def _train_options(command: str) -> dict:
    """{option string: argparse action} of `train COMMAND`."""
    parser = cli.build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    sub = train._subparsers._group_actions[0].choices[command]
    return {s: a for a in sub._actions for s in a.option_strings}


def test_the_registry_names_each_task_class_once():
    for key, decl in registry.TASKS.items():
        assert decl.load() is CLASSES[key]
        assert registry.declaration(decl.command) is registry.declaration(CLASSES[key]) is decl
    assert sorted(cli.TASKS) == sorted(d.command for d in registry.TASKS.values())


@pytest.mark.parametrize("key", CLASSES)
def test_each_declared_range_reaches_validate_the_form_and_the_cli(key):
    cls, decl = CLASSES[key], registry.TASKS[key]
    options = _train_options(decl.command)
    form = ParameterForm(key)
    ranged = [f for f in registry.declared_fields(cls.ModelParameters) if "range" in f.metadata]
    assert ranged, "every task declares numbers with a range"
    for f in ranged:
        lo, hi = f.metadata["range"]
        flag = f.metadata["cli"]
        assert flag in options and str(hi) in " ".join(options[flag].help.split()), (key, f.name)
        assert (form.fields[f.name].lo, form.fields[f.name].hi) == (lo, hi)
        for inside in (lo, hi):
            cls.ModelParameters(**{f.name: type(registry.field_default(f))(inside)}).validate()
        step = 0.5 if isinstance(registry.field_default(f), float) else 1
        for outside in (lo - step, hi + step):
            with pytest.raises(ParameterError) as info:
                cls.ModelParameters(**{f.name: type(registry.field_default(f))(outside)}).validate()
            assert info.value.name == f.name and f"from {lo} to {hi}" in str(info.value)  # the declared range
    for f in registry.declared_fields(cls.ModelParameters):
        if isinstance(registry.field_default(f), enum.Flag):  # the augmentations: the enum's own names
            names = [m.name.lower() for m in type(registry.field_default(f))]
            assert ", ".join(names) in " ".join(options[f.metadata["cli"]].help.split())
            assert list(form.fields[f.name].boxes) == list(type(registry.field_default(f)))
        flags = f.metadata.get("cli")
        for flag in (flags,) if isinstance(flags, str) else flags or ():
            assert flag in options, (key, f.name, flag)


def test_a_field_added_with_a_declaration_reaches_validate_the_form_and_the_cli(monkeypatch):
    base = MLHandPoseClassifier.ModelParameters

    @declared_parameters
    class WithSmoothing(base):
        smoothing: float = dataclasses.field(default=0.5, metadata={
            "title": "Smoothing", "range": (0.0, 1.0), "unit": "of a step", "cli": "--smoothing",
            "hint": "how much each step keeps of the last"})

    monkeypatch.setattr(MLHandPoseClassifier, "ModelParameters", WithSmoothing)
    # the documentation: help(ModelParameters) ends with each field's declaration in words
    assert "smoothing = 0.5: Smoothing, a number from 0 to 1 (of a step) [--smoothing]" in WithSmoothing.__doc__
    assert "maximum_iterations (maximumIterations) = 80: Training rounds" in WithSmoothing.__doc__
    with pytest.raises(ParameterError, match=r"smoothing=1\.5 is not allowed: a number from 0 to 1 \(of a step\)"):
        WithSmoothing(smoothing=1.5).validate()
    form = ParameterForm("hand_pose")
    box = form.fields["smoothing"]
    assert (box.lo, box.hi) == (0.0, 1.0) and form.parameters.smoothing == 0.5
    box.input.value = "2"
    assert not form.valid and "out of range" in form.errors["smoothing"]
    options = _train_options("handpose")
    assert "--smoothing" in options and "how much each step keeps" in options["--smoothing"].help
    args = cli.build_parser().parse_args(["train", "handpose", "d", "--out", "m.mlmodel", "--smoothing", "0.25"])
    assert cli._parameters("handpose", MLHandPoseClassifier, args).smoothing == 0.25
    args = cli.build_parser().parse_args(["train", "handpose", "d", "--out", "m.mlmodel", "--smoothing", "3"])
    with pytest.raises(cli.CommandLineError, match=r"--smoothing 3\.0: smoothing=3\.0 is not allowed"):
        cli._parameters("handpose", MLHandPoseClassifier, args)
    # ... and the session's parameters: written, read back, and an older session (written before the field
    # existed) reads as its default and is not taken for one started differently
    d = WithSmoothing(smoothing=0.25).to_dict()
    assert d["smoothing"] == 0.25 and WithSmoothing.from_dict(d) == WithSmoothing(smoothing=0.25)
    older = {k: v for k, v in d.items() if k != "smoothing"}
    assert WithSmoothing.from_dict(older).smoothing == 0.5
    stored = {"parameters": older}
    assert session_differences(MLHandPoseClassifier, stored, None, WithSmoothing(), None) == []
    assert session_differences(MLHandPoseClassifier, stored, None, WithSmoothing(smoothing=0.25), None) == [
        "its smoothing is null, not 0.25"]


@pytest.mark.parametrize("task", [MLImageClassifier, MLHandPoseClassifier, MLHandActionClassifier])
def test_parameters_round_trip_through_the_session_format(task):
    """to_dict/from_dict are read off the declared fields alone; every kind of value survives a JSON round trip."""
    import json

    from createml_widgets.data.validation import ValidationData

    changed = {}
    for f in registry.declared_fields(task.ModelParameters):
        default = registry.field_default(f)
        if "range" in f.metadata:
            changed[f.name] = type(default)(f.metadata["range"][0])
        elif isinstance(default, enum.Flag):
            changed[f.name] = list(type(default))[-1]
    changed["validation"] = ValidationData.none()
    if task is MLImageClassifier:
        changed["algorithm"] = task.ModelParameters.ModelAlgorithmType.transfer_learning(
            task.ModelParameters.ModelAlgorithmType().feature_extractor.scene_print(2),
            task.ModelParameters.ClassifierType.multilayer_perceptron([64, 32]))
    params = task.ModelParameters(**changed)
    params.validate()
    written = json.loads(json.dumps(params.to_dict()))
    assert task.ModelParameters.from_dict(written) == params
    assert task.ModelParameters.from_dict(written) != task.ModelParameters()


def test_help_imports_no_mediapipe():
    code = ("import sys, contextlib, io\nfrom createml_widgets import cli\n"
            "for task in cli.TASKS:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        cli.main(['train', task, '-h'])\n"
            "print(sorted(m for m in ('mediapipe', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stderr
