"""Fixtures for the Core ML export tests: real nets, real photos, each conversion done once per run."""
from __future__ import annotations

import pytest
import torch
from export_helpers import (
    ACTION_LABELS,
    ACTION_WINDOW,
    LABELS,
    METADATA,
    POSE_LABELS,
    TRAINING_INFO,
    randomize_batchnorm,
)

from createml_widgets.export import image_classifier_model, keypoint_classifier_model
from createml_widgets.nets import EfficientNetLiteFeatures, HandActionGCN, HandPoseGCN, LinearHead


@pytest.fixture(scope="session")
def backbone() -> EfficientNetLiteFeatures:
    return EfficientNetLiteFeatures("efficientnet-lite0")


@pytest.fixture(scope="session")
def linear_head() -> LinearHead:
    torch.manual_seed(1234)
    return LinearHead(1280, len(LABELS)).eval()


@pytest.fixture(scope="session")
def image_models(backbone, linear_head) -> dict:
    """{fmt: MLModel} for the pretrained backbone + a seeded linear head, converted once per run."""
    return {
        fmt: image_classifier_model(backbone, linear_head, LABELS, fmt=fmt, metadata=METADATA,
                                    training_info=TRAINING_INFO)
        for fmt in ("neuralnetwork", "mlprogram")
    }


@pytest.fixture(scope="session")
def pose_net() -> HandPoseGCN:
    torch.manual_seed(7)
    return randomize_batchnorm(HandPoseGCN(len(POSE_LABELS)), 7).eval()


@pytest.fixture(scope="session")
def action_net() -> HandActionGCN:
    torch.manual_seed(11)
    return randomize_batchnorm(HandActionGCN(len(ACTION_LABELS)), 11).eval()


@pytest.fixture(scope="session")
def pose_models(pose_net) -> dict:
    return {fmt: keypoint_classifier_model(pose_net, POSE_LABELS, 1, fmt=fmt,
                                           training_info={"task": "MLHandPoseClassifier"})
            for fmt in ("neuralnetwork", "mlprogram")}


@pytest.fixture(scope="session")
def action_models(action_net) -> dict:
    return {fmt: keypoint_classifier_model(action_net, ACTION_LABELS, ACTION_WINDOW, fmt=fmt,
                                           metadata=METADATA, training_info={"task": "MLHandActionClassifier"})
            for fmt in ("neuralnetwork", "mlprogram")}
