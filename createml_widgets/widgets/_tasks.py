"""The three tasks as the widgets see them: which class, which media, which sample.

The hand tasks import MediaPipe, and their modules may be missing in a partial install; they are
imported only when a widget asks for them, so the image path never depends on them.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import samples
from ..data.folders import is_media_file  # noqa: F401 - the widgets' name for it


@dataclass(frozen=True)
class TaskInfo:
    key: str  # "image", "hand_pose", "hand_action"
    title: str
    class_name: str
    module: str
    media: str  # "image" or "video"
    min_per_class: int  # fewer examples than this per label draws a warning
    sample: Callable[[], Path]

    def load(self) -> type:
        """The task class; ImportError with a clear message when its module is not available."""
        try:
            module = importlib.import_module(self.module)
            return getattr(module, self.class_name)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"{self.class_name} is not available in this installation ({err})") from err

    @property
    def media_plural(self) -> str:
        return f"{self.media}s"


TASKS: dict[str, TaskInfo] = {
    "image": TaskInfo("image", "Image Classifier", "MLImageClassifier", "createml_widgets.tasks.image_classifier",
                      "image", 10, samples.sign_language_digits),
    "hand_pose": TaskInfo("hand_pose", "Hand Pose Classifier", "MLHandPoseClassifier",
                          "createml_widgets.tasks.hand_pose_classifier", "image", 10, samples.sign_language_digits),
    "hand_action": TaskInfo("hand_action", "Hand Action Classifier", "MLHandActionClassifier",
                            "createml_widgets.tasks.hand_action_classifier", "video", 5, samples.hand_action_clips),
}

_ALIASES = {"image_classifier": "image", "images": "image", "handpose": "hand_pose", "hand_pose_classifier": "hand_pose",
            "handaction": "hand_action", "hand_action_classifier": "hand_action"}


def task_info(task) -> TaskInfo:
    """TaskInfo for a key ("image"), a task class (MLImageClassifier) or a trained model."""
    if isinstance(task, TaskInfo):
        return task
    if isinstance(task, str):
        key = _ALIASES.get(task.lower().replace("-", "_"), task.lower().replace("-", "_"))
        if key in TASKS:
            return TASKS[key]
        for info in TASKS.values():
            if info.class_name.lower() == task.lower():
                return info
        raise ValueError(f"unknown task {task!r}: use one of {sorted(TASKS)}")
    cls = task if isinstance(task, type) else type(task)
    for klass in cls.__mro__:
        for info in TASKS.values():
            if klass.__name__ == info.class_name:
                return info
    raise ValueError(f"{cls.__name__} is not one of the task classes ({', '.join(i.class_name for i in TASKS.values())})")
