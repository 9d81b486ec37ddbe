"""Opening a session folder for training: a new session, or the one there when it was started the same way.

`open_training_session(task, data, parameters, session_parameters)` is the one place that decides; the
task classes' `train()`, the command line and the widgets all go through it, so a folder that holds a
session started with other data or parameters is never silently continued with the old ones.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SessionError

if TYPE_CHECKING:
    from .session import MLTrainingSessionParameters
    from .tasks._base import AnyDataSource, AnyModelParameters, TrainingData


class SessionMismatchError(SessionError):
    """The session folder holds a session of another task, or one started with other data or parameters."""

    def __init__(self, root: Path, differences: list[str], stored_task: str | None = None):
        self.root, self.differences, self.stored_task = Path(root), list(differences), stored_task
        super().__init__(f"{root} holds a training session started differently ({'; '.join(differences)}): pass the "
                         "data and parameters it was started with to continue it, give session_parameters a new "
                         f"session_directory, or discard it (remove_session_directory({os.fspath(root)!r}), or "
                         "restart=True) to start over")


@dataclass
class OpenedSession:
    """What `open_training_session` found: `state` is "new", "continued" (the folder's session, started the same
    way), "restarted" (the folder's session was discarded as asked) or "replaced" (the folder's session never got
    past setup and was started differently: discarded, nothing was lost); `differences` says how it differed."""

    session: object  # MLTrainingSession
    state: str
    differences: list[str] = field(default_factory=list)


def _jsonable(value):
    return json.loads(json.dumps(value))


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def session_differences(task: type, stored: dict, data: AnyDataSource | None, parameters: AnyModelParameters | None,
                        root: Path) -> list[str]:
    """What differs between a stored session (its session.json) and this data and these parameters, in words;
    the iteration count may differ (training further is continuing). `data` or `parameters` None: not compared."""
    from .tasks.registry import iterations_field

    diffs = []
    if data is not None:
        old_data = _jsonable(stored.get("training_data", {}))
        new_data = _jsonable(data.to_dict(root))
        for d in (old_data, new_data):
            for key in ("value", "path", "annotation_file"):
                if isinstance(d.get(key), str):
                    d[key] = _absolute(d[key])
        if old_data != new_data:
            try:
                old = repr(task.DataSource.from_dict(old_data, root))
            except Exception:  # noqa: BLE001 - only for the message
                old = json.dumps(old_data)
            diffs.append(f"its training data is {old}, not {data!r}")
    if parameters is not None:
        old_params = dict(stored.get("parameters", {}))
        new_params = _jsonable(parameters.to_dict(root))
        iterations = iterations_field(task.ModelParameters)
        # a parameter added since the session was written reads as its default there (ModelParameters.from_dict)
        try:
            defaults = _jsonable(type(parameters)().to_dict(root))
        except Exception:  # noqa: BLE001 - parameters without defaults: every missing key is a difference
            defaults = {}
        for key in sorted(set(old_params) | set(new_params)):
            if key not in old_params and new_params.get(key) == defaults.get(key):
                continue
            if key != iterations and old_params.get(key) != new_params.get(key):
                diffs.append(f"its {key} is {json.dumps(old_params.get(key))}, not {json.dumps(new_params.get(key))}")
    return diffs


def open_training_session(task: type, training_data: TrainingData | None, parameters: AnyModelParameters | None = None,
                          session_parameters: MLTrainingSessionParameters | None = None, *,
                          restart: bool = False, keep_iterations: bool = False) -> OpenedSession:
    """A session to train `task` on `training_data` with `parameters`, in `session_parameters.session_directory`.

    An empty (or new) folder, or none: a new session. A folder holding a session of this task started with this
    data and these parameters (any iteration count): that session, continued — with the parameters' iteration
    count unless `keep_iterations` (None for `training_data` or `parameters`: the session's own). Started
    differently: SessionMismatchError naming what differs, unless it never got past setup (then it is replaced:
    nothing is lost). `restart`: the folder's session is discarded first (only the files it wrote).
    """
    from .session import (
        MANIFEST_FILE,
        SESSION_FILE,
        MLPhase,
        MLTrainingSessionParameters,
        _damaged,
        read_session_file,
        remove_session_directory,
    )
    from .tasks.registry import iterations_field

    sp = session_parameters or MLTrainingSessionParameters()
    root = sp.directory
    state, diffs = "new", []
    if root is not None and restart and ((root / SESSION_FILE).exists() or (root / MANIFEST_FILE).exists()):
        remove_session_directory(root, keep_folder=True)
        state = "restarted"
    elif root is not None and (root / SESSION_FILE).exists():
        path = root / SESSION_FILE
        stored = read_session_file(path)
        if stored.get("task") != task.__name__:
            raise SessionMismatchError(root, [f"it is a {stored.get('task')} session, not a {task.__name__} session"],
                                       stored_task=stored.get("task"))
        try:
            diffs = session_differences(task, stored, training_data, parameters, root)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise _damaged("the session file", path, f"{type(err).__name__}: {err}") from err
        if not diffs:
            session = task.restore_training_session(sp)
            if parameters is not None and not keep_iterations:
                name = iterations_field(task.ModelParameters)
                setattr(session.model_parameters, name, getattr(parameters, name))
            return OpenedSession(session, "continued")
        if bool(stored.get("checkpoints")) or stored.get("phase") not in (None, MLPhase.INITIALIZED.value):
            raise SessionMismatchError(root, diffs, stored_task=stored.get("task"))
        remove_session_directory(root, keep_folder=True)  # it never got past setup: nothing to lose
        state = "replaced"
    if training_data is None:
        raise SessionError(f"no training session in {root} to continue: pass the training data"
                           if root is not None else "pass the training data")
    return OpenedSession(task.make_training_session(training_data, parameters, sp), state, diffs)
