"""Wrong hand-task parameters are refused when training starts, naming the parameter."""
from __future__ import annotations

import pytest

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, ParameterError

HP, HA = MLHandPoseClassifier, MLHandActionClassifier


@pytest.mark.parametrize("task, kwargs, name", [
    (HP, {"batch_size": 0}, "batch_size"),
    (HP, {"maximum_iterations": -5}, "maximum_iterations"),
    (HP, {"augmentation_options": HA.VideoAugmentationOptions.ROTATE}, "augmentation_options"),
    (HP, {"algorithm": "stgcn"}, "algorithm"),
    (HA, {"prediction_window_size": 0}, "prediction_window_size"),
    (HA, {"target_frame_rate": 0}, "target_frame_rate"),
    (HA, {"target_frame_rate": "30"}, "target_frame_rate"),
    (HA, {"batch_size": 2.5}, "batch_size"),
    (HA, {"augmentation_options": HP.ImageAugmentationOptions.ROTATE}, "augmentation_options"),
])
def test_wrong_values_name_the_parameter(task, kwargs, name, digits_dir):
    params = task.ModelParameters(**kwargs)
    with pytest.raises(ParameterError, match=name):
        task.make_training_session(task.DataSource.labeled_directories(digits_dir), params)


def test_parameters_round_trip_through_json():
    import json

    params = HA.ModelParameters(prediction_window_size=45, target_frame_rate=15.0,
                                augmentation_options=HA.VideoAugmentationOptions.DROP_FRAMES
                                | HA.VideoAugmentationOptions.SCALE)
    again = HA.ModelParameters.from_dict(json.loads(json.dumps(params.to_dict())))
    assert again == params
    pose = HP.ModelParameters(batch_size=8, augmentation_options=HP.ImageAugmentationOptions.HORIZONTALLY_FLIP)
    assert HP.ModelParameters.from_dict(json.loads(json.dumps(pose.to_dict()))) == pose
