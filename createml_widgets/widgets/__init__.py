"""Jupyter widgets for training Create ML models: each usable alone, and composed by TrainerApp.

    from createml_widgets.widgets import TrainerApp
    TrainerApp()            # the image classifier on the bundled sample, ready to train

Widgets only call the library (`createml_widgets.tasks`); none holds training logic.
"""
from __future__ import annotations

from .app import TrainerApp
from .camera import Camera, LivePreview
from .confusion_matrix import ConfusionMatrix
from .data_source_picker import DataSourcePicker
from .parameter_form import InvalidParametersError, ParameterForm
from .prediction_preview import PredictionPreview
from .training_progress import TrainingProgress

__all__ = ["DataSourcePicker", "ParameterForm", "TrainingProgress", "ConfusionMatrix", "PredictionPreview",
           "TrainerApp", "InvalidParametersError", "Camera", "LivePreview"]
