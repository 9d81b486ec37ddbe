"""The three tasks, each declared once: the command line, the widgets and the engine read them from here.

A task is declared by a `TaskDeclaration` (its key, class, media kind, the line that describes it) and by
its `ModelParameters` dataclass, whose fields carry what a person may set (`field(metadata=...)`):

    "title"    plain words for the form           "createml"  Create ML's name of the parameter
    "help"     the form's "?" explainer           "hint"      one line (the command line's --help)
    "range"    (lowest, highest) allowed           "unit"      what the number counts ("frames", "fps")
    "cli"      the command-line option             "role"      "iterations": the count training runs to
    "choices"  {member name: plain words} for an enum's dropdown
    "expects"  what a value of another type is told to be    "inline"  written into the parameters' own dict

`validate_declared(params)` checks every field with a "range" (an int, or a number for float fields), every
enum field and every field that "expects" a type; the parameter form builds its controls, the command line its
`train TASK` options and `parameters_reference` the ModelParameters' docstring (`help()`) from the same fields. This module imports only the standard library: `--help` stays quick.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import AnyModelParameters, ClassifierTask


@dataclass(frozen=True)
class TaskDeclaration:
    """One task: its keys, its class (imported on `load`), its media kind and the words that describe it."""

    key: str  # "image", "hand_pose", "hand_action" (the widgets' and the library's key)
    command: str  # "image", "handpose", "handaction" (the command line's TASK)
    class_name: str
    module: str
    media: str  # "image" or "video": what one example is (and the annotation file's column of them)
    title: str
    summary: str  # one line: what it trains on what
    examples: str  # what a training folder holds, in words

    def load(self) -> type:
        """The task class; ImportError with a clear message when its module is not available."""
        try:
            return getattr(importlib.import_module(self.module), self.class_name)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"{self.class_name} is not available in this installation ({err})") from err


TASKS: dict[str, TaskDeclaration] = {d.key: d for d in (
    TaskDeclaration("image", "image", "MLImageClassifier", "createml_widgets.tasks.image_classifier", "image",
                    "Image Classifier", "image classifier (folders of photos)", "photos"),
    TaskDeclaration("hand_pose", "handpose", "MLHandPoseClassifier", "createml_widgets.tasks.hand_pose_classifier",
                    "image", "Hand Pose Classifier", "hand pose classifier (photos of hands)", "photos of hands"),
    TaskDeclaration("hand_action", "handaction", "MLHandActionClassifier",
                    "createml_widgets.tasks.hand_action_classifier", "video", "Hand Action Classifier",
                    "hand action classifier (video clips of hands)", "video clips"),
)}
_ALIASES = {"images": "image", "image_classifier": "image", "hand_pose_classifier": "hand_pose",
            "hand_action_classifier": "hand_action", **{d.command: d.key for d in TASKS.values()}}


def declaration(task: str | type | ClassifierTask | TaskDeclaration) -> TaskDeclaration:
    """The declaration of a key ("image", "handpose", "MLImageClassifier"), a task class or a trained model."""
    if isinstance(task, TaskDeclaration):
        return task
    if isinstance(task, str):
        key = task.lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key in TASKS:
            return TASKS[key]
        for d in TASKS.values():
            if d.class_name.lower() == task.lower():
                return d
        raise ValueError(f"unknown task {task!r}: use one of {sorted(TASKS)}")
    cls = task if isinstance(task, type) else type(task)
    for klass in cls.__mro__:
        for d in TASKS.values():
            if klass.__name__ == d.class_name:
                return d
    raise ValueError(f"{cls.__name__} is not one of the task classes ({', '.join(d.class_name for d in TASKS.values())})")


# -- the parameters' declarations -----------------------------------------------------------------------
def declared_fields(params_type: type) -> list[dataclasses.Field]:
    """The fields of a ModelParameters dataclass a person sets (in their order)."""
    return [f for f in dataclasses.fields(params_type) if f.init and not f.name.startswith("_")]


def field_default(f: dataclasses.Field) -> object:
    """The field's default value (a fresh one from its default factory, when it has one)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def iterations_field(params_type: type) -> str:
    """The name of the field that bounds training (max_iterations, maximum_iterations)."""
    return next(f.name for f in declared_fields(params_type) if f.metadata.get("role") == "iterations")


def number_text(value: float) -> str:
    """A number as a person writes it: 30.0 as "30", 0.5 as "0.5"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def allowed_text(f: dataclasses.Field) -> str:
    """"an int from 1 to 4096" / "a number from 1 to 240 (frames per second)": the declared range in words."""
    lo, hi = f.metadata["range"]
    kind = "a number" if isinstance(field_default(f), float) else "an int"
    unit = f.metadata.get("unit")
    return f"{kind} from {number_text(lo)} to {number_text(hi)}" + (f" ({unit})" if unit else "")


def check_declared(f: dataclasses.Field, value: object) -> str | None:
    """What is wrong with `value` for the declared field `f` (None when it is allowed)."""
    default = field_default(f)
    if "range" in f.metadata:
        lo, hi = f.metadata["range"]
        numeric = (int, float) if isinstance(default, float) else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value) \
                or not lo <= value <= hi:
            return allowed_text(f)
    elif isinstance(default, enum.Flag) and not isinstance(value, type(default)):
        flags = type(default)
        members = list(flags)
        return f"{flags.__qualname__} flags, e.g. {flags.__qualname__}.{members[0].name} | .{members[-1].name}"
    elif isinstance(default, enum.Enum) and not isinstance(value, type(default)):
        kind = type(default)
        return " or ".join(f"{kind.__qualname__}.{m.name}" for m in kind)
    elif "expects" in f.metadata and not isinstance(value, type(default)):
        return f.metadata["expects"]
    return None


def validate_declared(params: AnyModelParameters) -> None:
    """ParameterError for the first field whose value is outside what its declaration allows."""
    from ..errors import ParameterError

    for f in declared_fields(type(params)):
        value = getattr(params, f.name)
        problem = check_declared(f, value)
        if problem is not None:
            raise ParameterError(f.name, value, problem)


def parameters_reference(params_type: type) -> str:
    """Each declared field of a ModelParameters in words (name, Create ML's name, default, what is allowed, help):
    the text `help(Task.ModelParameters)` ends with."""
    lines = ["Parameters (Create ML's name in brackets; a field each):", ""]
    for f in declared_fields(params_type):
        default = field_default(f)
        shown = default.value if isinstance(default, enum.Enum) and not isinstance(default, enum.Flag) else default
        head = f"{f.name}" + (f" ({f.metadata['createml']})" if "createml" in f.metadata else "") + f" = {shown}"
        title = f.metadata.get("title", "")
        allowed = allowed_text(f) if "range" in f.metadata else None
        lines.append(f"    {head}: {title}" + (f", {allowed}" if allowed else "") + (f" [{' '.join(f.metadata['cli'])}]"
                     if isinstance(f.metadata.get("cli"), tuple) else f" [{f.metadata['cli']}]" if "cli" in f.metadata else ""))
        if "help" in f.metadata:
            lines.append(f"        {f.metadata['help']}")
    return "\n".join(lines)
