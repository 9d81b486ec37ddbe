"""Where the app keeps its training sessions on disk, so that a new page (a reload, a new kernel) finds a
run that was interrupted and offers to resume it.

One session folder per task and data set, under `sessions_root()`: `$CREATEML_WIDGETS_SESSIONS`, else
`sessions/` in the feature cache (`$CREATEML_WIDGETS_CACHE`, …). Train starts the folder's session over
(`open_training_session(..., restart=True)`); a session there that stopped before the end of its
iterations (cancelled, the page left, the kernel gone) is what `interrupted_session` returns and what
Resume continues, with its own data, parameters and iteration count. A reloaded page's first kernel may
still be running it (until it hears the page was left, or is culled): Resume then waits for the folder
to be free (`folder_busy`) and continues the session as that run left it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CreateMLError
from ..session import SESSION_FILE, MLPhase, MLTrainingSessionParameters, read_session_file
from ..session_store import SessionBusyError, session_lock

if TYPE_CHECKING:
    from ..session import MLTrainingSession
    from ..tasks._base import AnyDataSource, ClassifierTask

log = logging.getLogger(__name__)
ENV = "CREATEML_WIDGETS_SESSIONS"
REPORT_INTERVAL, CHECKPOINT_INTERVAL = 1, 10  # the app's: a curve point each iteration


def sessions_root() -> Path:
    """`$CREATEML_WIDGETS_SESSIONS`, else `sessions/` in the feature cache."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    from ..features.cache import cache_root

    return (cache_root() / "sessions").resolve()


def session_folder(root: Path, task_key: str, source: AnyDataSource) -> Path:
    """The session folder of `task_key` on the data source `source` (named by its description)."""
    described = json.dumps(source.to_dict(None), sort_keys=True, default=str)
    return Path(root) / f"{task_key}-{hashlib.sha256(described.encode()).hexdigest()[:16]}"


def session_parameters(folder: Path, iterations: int) -> MLTrainingSessionParameters:
    """The app's session parameters for `folder`: a curve point each iteration, a checkpoint every ten."""
    return MLTrainingSessionParameters(session_directory=folder, report_interval=REPORT_INTERVAL,
                                       checkpoint_interval=CHECKPOINT_INTERVAL, iterations=max(1, int(iterations)))


def _stored_iterations(stored: dict, task) -> int | None:
    from ..tasks.registry import iterations_field

    value = stored.get("parameters", {}).get(iterations_field(task.ModelParameters))
    return int(value) if isinstance(value, (int, float)) else None


def interrupted_session(task: type[ClassifierTask], folder: Path) -> MLTrainingSession | None:
    """The session in `folder` when it stopped before its last iteration (None when there is none, it is
    another task's, it finished, or it cannot be read): restored with its own iteration count, ready for
    `task.resume`."""
    path = Path(folder) / SESSION_FILE
    if not path.exists():
        return None
    try:
        stored = read_session_file(path)
        if stored.get("task") != task.__name__:
            return None
        total = _stored_iterations(stored, task)
        phase = MLPhase(stored.get("phase"))
        iteration = int(stored.get("iteration", 0))
        if total is None or phase == MLPhase.INITIALIZED:
            return None
        if phase == MLPhase.EVALUATING or (phase == MLPhase.TRAINING and iteration >= total):
            return None  # finished
        return task.restore_training_session(session_parameters(folder, total))
    except (CreateMLError, OSError, ValueError, TypeError, KeyError) as err:
        log.info("the session in %s cannot be resumed: %s", folder, err)
        return None


def folder_busy(folder: Path) -> bool:
    """True while a training run (in this process or another) holds the session folder's lock."""
    try:
        with session_lock(Path(folder)):
            return False
    except SessionBusyError:
        return True
    except CreateMLError:  # no folder: nothing holds it
        return False
