"""createml_widgets: Create ML's image, hand pose and hand action classifiers for Jupyter.

    from createml_widgets import MLImageClassifier
    data = MLImageClassifier.DataSource.labeled_directories("photos/")
    model = MLImageClassifier(data)
    model.write("Classifier.mlmodel")
"""
from __future__ import annotations

from importlib import import_module

from .data.split import MLSplitStrategy
from .data.validation import ValidationData
from .errors import (
    CreateMLError,
    DataSourceError,
    NoHandDetectedError,
    ParameterError,
    SessionError,
    UnreadableFileError,
)
from .features.distributed import use_cluster
from .metadata import MLModelMetadata
from .metrics import MLClassifierMetrics
from .session import (
    JobCancelledError,
    MLCheckpoint,
    MLJob,
    MLPhase,
    MLProgress,
    MLTrainingSession,
    MLTrainingSessionParameters,
)
from .tasks.image_classifier import MLImageClassifier

__version__ = "0.1.0"

_LAZY = {
    "MLHandPoseClassifier": ".tasks.hand_pose_classifier",
    "MLHandActionClassifier": ".tasks.hand_action_classifier",
}


def __getattr__(name: str):
    # The hand tasks import MediaPipe; load them on first use so `import createml_widgets` stays quick.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MLImageClassifier", "MLHandPoseClassifier", "MLHandActionClassifier", "MLSplitStrategy", "ValidationData",
    "MLModelMetadata", "MLClassifierMetrics", "MLCheckpoint", "MLJob", "MLPhase", "MLProgress",
    "MLTrainingSession", "MLTrainingSessionParameters", "JobCancelledError", "CreateMLError", "DataSourceError",
    "NoHandDetectedError", "ParameterError", "SessionError", "UnreadableFileError", "use_cluster",
]
