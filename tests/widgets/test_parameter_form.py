"""ParameterForm: one control per ModelParameters field, Create ML's defaults, the library's ranges,
validation as you type, and a real ModelParameters out (round trips, and training with it)."""
from __future__ import annotations

import dataclasses
import html

import pytest

from createml_widgets import (
    MLHandActionClassifier,
    MLHandPoseClassifier,
    MLImageClassifier,
    MLSplitStrategy,
    ValidationData,
)
from createml_widgets.errors import ParameterError
from createml_widgets.widgets import InvalidParametersError, ParameterForm
from createml_widgets.widgets.parameter_form import LATEST

IC, HP, HA = MLImageClassifier, MLHandPoseClassifier, MLHandActionClassifier
TASKS = {"image": IC, "hand_pose": HP, "hand_action": HA}


@pytest.mark.parametrize("key", TASKS)
def test_every_field_with_its_create_ml_default(key):
    cls = TASKS[key]
    form = ParameterForm(key)
    assert list(form.fields) == [f.name for f in dataclasses.fields(cls.ModelParameters)]
    assert form.valid and form.errors == {} and form.is_valid
    assert form.parameters == cls.ModelParameters()  # untouched form: exactly Create ML's defaults
    for name, fld in form.fields.items():
        assert f"cmlw-field-{name}" in fld.box()._dom_classes
    numbers = {n: f for n, f in form.fields.items() if hasattr(f, "lo")}
    for name, fld in numbers.items():
        default = getattr(cls.ModelParameters(), name)
        assert f"(default {default:g})" in fld.range.value  # the default and the range are shown


@pytest.mark.parametrize("key", TASKS)
def test_number_ranges_are_the_librarys(key):
    """The form's bounds are accepted by ModelParameters.validate(), and one step past is refused by
    both (where the library has an upper bound at all)."""
    cls = TASKS[key]
    form = ParameterForm(key)
    for name, fld in ((n, f) for n, f in form.fields.items() if hasattr(f, "lo")):
        step = 1 if fld.integer else 0.5
        for inside in (fld.lo, fld.hi):
            fld.input.value = str(int(inside) if fld.integer else inside)
            assert form.valid, (name, inside, form.errors)
            assert getattr(form.parameters, name) == inside
            cls.ModelParameters(**{name: getattr(form.parameters, name)}).validate()
        for outside in (fld.lo - step, fld.hi + step):
            fld.input.value = str(int(outside) if fld.integer else outside)
            assert not form.valid and "out of range" in form.errors[name]
            value = int(outside) if fld.integer else outside
            with pytest.raises(ParameterError):  # one declaration: the form's range is validate()'s
                cls.ModelParameters(**{name: value}).validate()
        fld.input.value = str(getattr(cls.ModelParameters(), name))
    assert form.valid


def test_validates_as_you_type():
    form = ParameterForm("image")
    box = form.fields["max_iterations"]
    for text, message in [("", "enter a whole number from 1 to 100000"), ("12.5", "'12.5' is not a whole number"),
                          ("abc", "'abc' is not a whole number"), ("0", "0 is out of range"),
                          ("-3", "-3 is out of range"), ("100001", "100001 is out of range")]:
        box.input.value = text  # each keystroke sets the value (continuous_update)
        assert not form.valid and message in form.errors["max_iterations"], text
        assert html.escape(message) in box.error.value  # shown under the field
        with pytest.raises(InvalidParametersError) as info:
            form.parameters  # noqa: B018
        assert set(info.value.errors) == {"max_iterations"}
    box.input.value = " 1_000 "
    assert form.valid and box.error.value == "" and form.parameters.max_iterations == 1000
    assert box.input.continuous_update


def test_several_wrong_fields_are_all_named():
    form = ParameterForm("hand_action")
    form.fields["batch_size"].input.value = "0"
    form.fields["target_frame_rate"].input.value = "nan"
    form.fields["validation"].choice.value = "fixed"
    form.fields["validation"].ratio.value = "1"
    assert set(form.errors) == {"batch_size", "target_frame_rate", "validation"}
    with pytest.raises(InvalidParametersError) as info:
        form.parameters  # noqa: B018
    assert set(info.value.errors) == {"batch_size", "target_frame_rate", "validation"}
    assert "between 0 and 1" in form.errors["validation"]
    form.reset_button.click()
    assert form.valid and form.parameters == HA.ModelParameters()


def test_validation_choices():
    form = ParameterForm("image")
    v = form.fields["validation"]
    assert v.ratio.layout.display == "none"  # only for a fixed ratio
    v.choice.value = "fixed"
    assert v.ratio.layout.display is None
    v.ratio.value, v.seed.value = "0.25", "7"
    assert form.parameters.validation == ValidationData.split(MLSplitStrategy.fixed(0.25, 7))
    for seed, message in [("x", "not a whole number"), ("-1", "0 or more")]:
        v.seed.value = seed
        assert message in form.errors["validation"]
    v.seed.value = ""
    assert form.parameters.validation == ValidationData.split(MLSplitStrategy.fixed(0.25, None))
    v.choice.value = "none"
    assert form.parameters.validation == ValidationData.none()
    v.choice.value = "automatic"
    assert form.parameters.validation == ValidationData.split(MLSplitStrategy.automatic())


def test_validation_data_given_in_code_is_kept(digits_dir):
    source = IC.DataSource.labeled_directories(digits_dir)
    params = IC.ModelParameters(validation=ValidationData.data_source(source))
    form = ParameterForm("image", parameters=params)
    v = form.fields["validation"]
    assert v.choice.value == "kept" and "from code" in v.choice.options[-1][0]
    assert form.parameters.validation == params.validation
    form.reset()
    assert [o[1] for o in v.choice.options] == ["automatic", "fixed", "none"]


def test_image_algorithm_and_augmentation():
    form = ParameterForm("image")
    alg = form.fields["algorithm"]
    assert alg.layers.layout.display == "none"
    alg.classifier.value = "multilayer_perceptron"
    assert alg.layers.layout.display is None
    alg.layers.value = "64 32"
    assert form.parameters.classifier == IC.ClassifierType.multilayer_perceptron([64, 32])
    for text in ("64, x", "", "0", "-4"):
        alg.layers.value = text
        assert "algorithm" in form.errors, text
    alg.layers.value = "16"
    alg.extractor.value = 2
    assert form.parameters.feature_extractor == IC.FeatureExtractorType.scene_print(2)
    alg.extractor.value = LATEST  # "latest revision" is a real, selectable choice
    assert form.parameters.feature_extractor == IC.FeatureExtractorType.scene_print(None)

    aug = form.fields["augmentation"]
    assert set(aug.boxes) == set(IC.ImageAugmentationOptions)
    aug.boxes[IC.ImageAugmentationOptions.CROP].value = True
    aug.boxes[IC.ImageAugmentationOptions.FLIP].value = True
    assert form.parameters.augmentation == IC.ImageAugmentationOptions.CROP | IC.ImageAugmentationOptions.FLIP


@pytest.mark.parametrize("params", [
    IC.ModelParameters(max_iterations=3, augmentation=IC.ImageAugmentationOptions.BLUR | IC.ImageAugmentationOptions.NOISE,
                       validation=ValidationData.split(MLSplitStrategy.fixed(0.3, 11)),
                       algorithm=IC.ModelAlgorithmType.transfer_learning(
                           IC.FeatureExtractorType.scene_print(None), IC.ClassifierType.multilayer_perceptron([8, 4]))),
    HP.ModelParameters(batch_size=7, maximum_iterations=9, validation=ValidationData.none(),
                       augmentation_options=HP.ImageAugmentationOptions.ROTATE),
    HA.ModelParameters(prediction_window_size=15, target_frame_rate=12.5,
                       augmentation_options=HA.VideoAugmentationOptions.DROP_FRAMES
                       | HA.VideoAugmentationOptions.TRANSLATE),
], ids=["image", "hand_pose", "hand_action"])
def test_round_trip(params):
    form = ParameterForm(_task_of(params), parameters=params)
    assert form.valid and form.parameters == params
    assert form.parameters is not params
    form.reset()
    assert form.parameters == type(params)()
    form.set_parameters(params)
    assert form.parameters == params


def _task_of(params) -> str:
    return next(k for k, cls in TASKS.items() if isinstance(params, cls.ModelParameters))


def test_wrong_parameters_type_is_refused():
    with pytest.raises(TypeError, match="MLImageClassifier.ModelParameters"):
        ParameterForm("image", parameters=HP.ModelParameters())


def test_hand_enum_field_is_a_dropdown():
    form = ParameterForm("hand_pose")
    algorithm = form.fields["algorithm"].input
    assert [v for _label, v in algorithm.options] == list(HP.ModelAlgorithmType)
    assert form.parameters.algorithm is HP.ModelAlgorithmType.GCN


def test_the_forms_parameters_train_a_real_model(image_root):
    form = ParameterForm("image")
    form.fields["max_iterations"].input.value = "4"
    form.fields["validation"].choice.value = "none"
    model = IC(IC.DataSource.labeled_directories(image_root / "digits"), form.parameters)
    assert model._iterations == 4 and model.model_parameters.max_iterations == 4
    assert model.training_metrics.count == 18 and not model.validation_metrics.is_valid


@pytest.mark.parametrize("text", ["30%", "30", "0.3", " 30 % "])
def test_a_validation_share_is_accepted_as_a_percentage_or_a_fraction(text):
    form = ParameterForm("image")
    form.fields["validation"].choice.value = "fixed"
    form.fields["validation"].ratio.value = text
    assert form.valid, form.errors
    assert form.parameters.validation.strategy.ratio == pytest.approx(0.3)


@pytest.mark.parametrize("key", ["image", "hand_pose", "hand_action"])
def test_every_parameter_has_plain_words_its_create_ml_name_and_a_question_mark(key):
    """The help is declared once, on the ModelParameters fields (metadata), and the form shows it."""
    form = ParameterForm(key)
    cls = form.task_class
    for f in dataclasses.fields(cls.ModelParameters):
        assert {"title", "createml", "help"} <= set(f.metadata), f"{key}.{f.name} has no title/createml/help"
        box = form.fields[f.name].box()
        texts = " ".join(w.value for w in _html_widgets(box))
        assert f.metadata["title"] in texts and f.metadata["createml"] in texts
        assert "<details class='cmlw-help" in texts and ">?</summary>" in texts
    assert "ModelParameters" in form.children[0].value and "How to train" in form.children[0].value


def _html_widgets(w):
    import ipywidgets as widgets

    if isinstance(w, widgets.HTML):
        yield w
    for child in getattr(w, "children", ()):
        yield from _html_widgets(child)
