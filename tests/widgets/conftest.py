"""Fixtures for the widget tests: small copies of the real sample data, and real models trained once.

Widgets are checked from Python without a kernel: ipywidgets keep their state (values, children,
Plotly FigureWidget data) in the Python objects, which is what a browser would be sent.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from widget_helpers import DIGITS, copy_photos

from createml_widgets import MLHandPoseClassifier, MLImageClassifier


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
