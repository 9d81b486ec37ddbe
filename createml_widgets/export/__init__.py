"""Core ML export of the trained models, and a numpy evaluator that checks the exported files.

`image_classifier_model` / `keypoint_classifier_model` build a `coremltools.models.MLModel`
(neural network or ML program), `write_model` writes it atomically, and
`spec_eval.evaluate` computes what Core ML's predict would return, on any platform.
"""
from .coreml import (
    FORMATS,
    FRAME_RATE_KEY,
    HAND_JOINT_NAMES,
    PREVIEW_TYPE_KEY,
    PREVIEW_TYPES,
    SUFFIXES,
    VERSION_METADATA_KEY,
    WINDOW_SIZE_KEY,
    apply_metadata,
    creator_metadata,
    format_for_path,
    image_classifier_model,
    keypoint_classifier_model,
    minimum_specification_version,
    poses_description,
    write_model,
)
from .spec_eval import SpecInterpreter, evaluate, load

__all__ = [
    "FORMATS", "HAND_JOINT_NAMES", "SUFFIXES", "VERSION_METADATA_KEY", "apply_metadata", "format_for_path",
    "image_classifier_model", "keypoint_classifier_model", "poses_description", "write_model",
    "SpecInterpreter", "evaluate", "load",
    "FRAME_RATE_KEY", "PREVIEW_TYPE_KEY", "PREVIEW_TYPES", "WINDOW_SIZE_KEY", "creator_metadata",
    "minimum_specification_version",
]
