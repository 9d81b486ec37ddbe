"""Fixtures for the widget tests: small copies of the real sample data, and real models trained once.

Widgets are checked from Python without a kernel: ipywidgets keep their state (values, children,
Plotly FigureWidget data) in the Python objects, which is what a browser would be sent.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from widget_helpers import DIGITS, annotate_clips, copy_photos

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    """A data root with `digits/` (labels 0, 1, 5 x 6 real photos): what the image model trained on."""
    root = tmp_path_factory.mktemp("image-root")
    copy_photos(root / "digits")
    return root


@pytest.fixture(scope="session")
def image_model(image_root):
    """A real MLImageClassifier trained on `image_root/digits` (a few seconds; shared by the modules)."""
    IC = MLImageClassifier
    params = IC.ModelParameters(max_iterations=10, validation=IC.ValidationData.none())
    return IC(IC.DataSource.labeled_directories(image_root / "digits"), params)


@pytest.fixture(scope="session")
def confusing_metrics(image_model, tmp_path_factory):
    """Real metrics with real mistakes: the trained model evaluated on photos filed under the wrong
    label (folder "0" holds photos of a 1, and so on), so off-diagonal cells hold real examples."""
    root = tmp_path_factory.mktemp("mislabelled")
    wrong = {"0": "1", "1": "5", "5": "5"}  # folder name -> the digit actually shown
    for folder, digit in wrong.items():
        (root / folder).mkdir()
        for photo in sorted((DIGITS / digit).iterdir())[6:9]:  # photos the model never saw
            shutil.copy(photo, root / folder / photo.name)
    metrics = image_model.evaluation(on=MLImageClassifier.DataSource.labeled_directories(root))
    assert metrics.is_valid, metrics.error
    return metrics


@pytest.fixture(scope="session")
def hand_pose_model(tmp_path_factory):
    """A real MLHandPoseClassifier (MediaPipe keypoints of 3 labels x 6 photos; several seconds)."""
    root = copy_photos(tmp_path_factory.mktemp("hand-pose") / "poses", labels=("0", "1", "5"), per_label=6)
    HP = MLHandPoseClassifier
    return HP(HP.DataSource.labeled_directories(root),
              HP.ModelParameters(maximum_iterations=30, validation=HP.ValidationData.none()))


@pytest.fixture(scope="session")
def annotated_clips(tmp_path_factory) -> Path:
    """`clips/` with 3 real clips of "wave" and of "zoom" and `actions.csv` naming two time ranges of each."""
    return annotate_clips(tmp_path_factory.mktemp("annotated") / "clips")


@pytest.fixture(scope="session")
def hand_action_range_model(annotated_clips):
    """A real MLHandActionClassifier trained on the annotated time ranges (items named `clip.mp4 [0s–1s]`)."""
    HA = MLHandActionClassifier
    source = HA.DataSource.directory_with_videos_and_annotation(
        annotated_clips, annotated_clips / "actions.csv", "video", "action", "start_time", "end_time")
    return HA(source, HA.ModelParameters(maximum_iterations=5, prediction_window_size=15,
                                         validation=HA.ValidationData.none()))


@pytest.fixture(scope="session")
def hand_pose_no_hand(tmp_path_factory):
    """A real MLHandPoseClassifier whose data holds a photo with no hand in it, in training and in validation:
    (model, the training photo, the validation photo). Training leaves it out (listed as skipped);
    validation counts it as a wrong '(no hand)' prediction."""
    base = tmp_path_factory.mktemp("no-hand")
    train = copy_photos(base / "train", per_label=5)
    val = copy_photos(base / "val", per_label=1, start=10)
    blank_train, blank_val = train / "1" / "blank_train.png", val / "5" / "blank_val.png"
    Image.new("RGB", (160, 160), (200, 200, 200)).save(blank_train)  # a real photo of a grey wall
    Image.new("RGB", (160, 160), (90, 140, 200)).save(blank_val)
    HP = MLHandPoseClassifier
    model = HP(HP.DataSource.labeled_directories(train),
               HP.ModelParameters(maximum_iterations=20,
                                  validation=HP.ValidationData.data_source(HP.DataSource.labeled_directories(val))))
    return model, blank_train, blank_val
