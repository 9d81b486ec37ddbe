"""The three tasks as the widgets see them: which class, which media, which sample.

The hand tasks import MediaPipe, and their modules may be missing in a partial install; they are
imported only when a widget asks for them, so the image path never depends on them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import samples
from ..data.folders import is_media_file  # noqa: F401 - the widgets' name for it
from ..tasks import registry

if TYPE_CHECKING:
    from ..tasks._base import ClassifierTask


@dataclass(frozen=True)
class TaskInfo:
    """One task as the widgets use it: the library's declaration plus its sample data and per-label minimum."""

    key: str  # "image", "hand_pose", "hand_action"
    title: str
    class_name: str
    module: str
    media: str  # "image" or "video"
    min_per_class: int  # fewer examples than this per label draws a warning
    sample: Callable[[], Path]

    def load(self) -> type:
        """The task class; ImportError with a clear message when its module is not available."""
        return registry.TASKS[self.key].load()

    @property
    def media_plural(self) -> str:
        """"images" or "videos"."""
        return f"{self.media}s"


# The widget-only facts; everything else is the library's declaration (tasks/registry.py).
_WIDGET_FACTS = {"image": (10, samples.sign_language_digits), "hand_pose": (10, samples.sign_language_digits),
                 "hand_action": (5, samples.hand_action_clips)}
TASKS: dict[str, TaskInfo] = {
    key: TaskInfo(d.key, d.title, d.class_name, d.module, d.media, *_WIDGET_FACTS[key])
    for key, d in registry.TASKS.items()
}


def task_info(task: str | type | ClassifierTask | TaskInfo) -> TaskInfo:
    """TaskInfo for a key ("image"), a task class (MLImageClassifier) or a trained model."""
    if isinstance(task, TaskInfo):
        return task
    return TASKS[registry.declaration(task).key]
