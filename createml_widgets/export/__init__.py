"""Core ML export of the trained models, and a numpy evaluator that checks the exported files.

`image_classifier_model` / `keypoint_classifier_model` build a `coremltools.models.MLModel`
(neural network or ML program), `write_model` writes it atomically, and
`spec_eval.evaluate` computes what Core ML's predict would return, on any platform.
"""
from .coreml import (
    FORMATS,
    HAND_JOINT_NAMES,
    SUFFIXES,
    VERSION_METADATA_KEY,
    apply_metadata,
    format_for_path,
    image_classifier_model,
    keypoint_classifier_model,
    poses_description,
    write_model,
)
from .spec_eval import SpecInterpreter, evaluate, load

__all__ = [
    "FORMATS", "HAND_JOINT_NAMES", "SUFFIXES", "VERSION_METADATA_KEY", "apply_metadata", "format_for_path",
    "image_classifier_model", "keypoint_classifier_model", "poses_description", "write_model",
    "SpecInterpreter", "evaluate", "load",
]
