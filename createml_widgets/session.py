"""The one training engine every task shares: sessions, jobs, checkpoints, phases and progress.

This module holds the session's state (MLTrainingSession, its checkpoints, phases and parameters); what it
keeps on disk (manifest, folder lock, digests, features) is in `session_store.py`, running it (MLJob and the
run) in `session_run.py`, and opening a folder for training (new, or continued when started the same way) in
`session_open.py`. Every name is importable from here.

A task class (image, hand pose, hand action) supplies only a *plan* (which items to extract
features from, with which extractor), a trainer (its network and data batches) and a builder
for the finished model. Everything else — persistence in the session directory, feature
extraction with resume, the training loop with reports and checkpoints, cancellation and the
asynchronous MLJob — lives in these four modules.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fileio import atomic_write
from .errors import CreateMLError, ParameterError, SessionError
from .session_store import (  # noqa: F401 - names of this module before the split (session_store.py)
    _LEGACY_NAMES,
    _SESSION_NAMES,
    _TEMP_NAME,
    MANIFEST_FILE,
    MANIFEST_KIND,
    SESSION_FILE,
    FeatureStore,
    SessionBusyError,
    SessionFiles,
    _damaged,
    load_tensors,
    prepare_session_directory,
    read_session_file,
    read_verified,
    remove_session_directory,
    save_tensors,
    session_lock,
    session_path,
    session_writes,
    sha256_of,
    tensors_bytes,
)

if TYPE_CHECKING:
    from .tasks._base import AnyDataSource, AnyModelParameters

log = logging.getLogger(__name__)

SESSION_FORMAT = 1
# Training checkpoints a session keeps (in memory and on disk): the latest few plus the best by validation.
KEEP_LATEST_CHECKPOINTS = 5


class MLPhase(StrEnum):
    """The phase a training session is in."""

    INITIALIZED = "initialized"
    EXTRACTING_FEATURES = "extractingFeatures"
    TRAINING = "training"
    EVALUATING = "evaluating"
    INFERENCING = "inferencing"

    @property
    def title(self) -> str:
        """The phase in words, as progress shows it ("Extracting features")."""
        return {"initialized": "Starting", "extractingFeatures": "Extracting features"}.get(self.value,
                                                                                           self.value.capitalize())


class Metric(StrEnum):
    """Keys of `MLProgress.metrics` and `MLCheckpoint.metrics`."""

    ACCURACY = "accuracy"
    LOSS = "loss"
    VALIDATION_ACCURACY = "validation_accuracy"
    VALIDATION_LOSS = "validation_loss"


@dataclass
class MLProgress:
    """One progress report: where the session is and how far it has come."""

    phase: MLPhase
    item_count: int = 0
    total_item_count: int | None = None
    elapsed_time: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    Metric = Metric

    @property
    def fraction_completed(self) -> float:
        """item_count / total_item_count (0 while the total is unknown)."""
        return self.item_count / self.total_item_count if self.total_item_count else 0.0

    def __str__(self) -> str:
        total = f"/{self.total_item_count}" if self.total_item_count is not None else ""
        m = ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items())
        return f"{self.phase.value} {self.item_count}{total} ({self.elapsed_time:.1f}s){' ' + m if m else ''}"


@dataclass
class MLCheckpoint:
    """A saved state of a session: after some feature extraction, or after a training iteration."""

    phase: MLPhase
    iteration: int
    date: dt.datetime
    url: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    # SHA-256 of the checkpoint's file, checked when it is read.
    sha256: str | None = field(default=None, repr=False, compare=False)
    # In-memory state for sessions without a directory (never serialised).
    _state: dict | None = field(default=None, repr=False, compare=False)
    _session_directory: Path | None = field(default=None, repr=False, compare=False)

    def to_dict(self, root: Path | None = None) -> dict:
        """JSON-ready form; the file is named relative to the session folder `root` when one is given."""
        url = None
        if self.url is not None:
            url = os.path.relpath(self.url, root) if root is not None else str(self.url)
        d = {"phase": self.phase.value, "iteration": self.iteration, "date": self.date.isoformat(),
             "url": url, "metrics": {str(k): float(v) for k, v in self.metrics.items()}}
        if self.sha256:
            d["sha256"] = self.sha256
        return d

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> MLCheckpoint:
        """The checkpoint `to_dict` saved (its file confined to the session folder `root`)."""
        url = d.get("url")
        if url and root is not None:
            path = session_path(root, url, "the checkpoint")
        else:
            path = Path(url) if url else None
        return cls(MLPhase(d["phase"]), int(d["iteration"]), dt.datetime.fromisoformat(d["date"]), path,
                   dict(d.get("metrics", {})), sha256=d.get("sha256"), _session_directory=root)

    def _load_state(self) -> dict:
        """The trainer state this checkpoint saved (SessionError naming the file when it is damaged)."""
        if self.url is None:
            if self._state is None:
                raise SessionError(f"the weights of the iteration-{self.iteration} checkpoint were let go: a session "
                                   f"keeps only its latest {KEEP_LATEST_CHECKPOINTS} training checkpoints and its best "
                                   "by validation; use one of session.checkpoints")
            return self._state
        if self._session_directory is not None:
            session_path(self._session_directory, self.url, "the checkpoint")
        return load_tensors(self.url, self.sha256)


@dataclass
class MLTrainingSessionParameters:
    """Where a session keeps its files, and how often it reports and checkpoints.

    `report_interval` and `checkpoint_interval` count training iterations; during feature
    extraction they count batches of items. `iterations` caps the session's training iterations.
    """

    session_directory: str | os.PathLike | None = None
    report_interval: int = 5
    checkpoint_interval: int = 10
    iterations: int = 1000

    def validate(self) -> None:
        """ParameterError naming the interval or iteration count that is not a positive int."""
        for name in ("report_interval", "checkpoint_interval", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"MLTrainingSessionParameters.{name}", value, "a positive int")

    @property
    def directory(self) -> Path | None:
        """`session_directory` as an absolute path (user folder expanded); None for an in-memory session."""
        # absolute: a session's files are named relative to it, and a relative folder named them twice over
        # ("s/s/checkpoints/...": pruned checkpoints were never deleted)
        return Path(os.path.abspath(Path(self.session_directory).expanduser())) \
            if self.session_directory is not None else None

    def to_dict(self) -> dict:
        """JSON-ready {session_directory, report_interval, checkpoint_interval, iterations}."""
        return {"session_directory": str(self.session_directory) if self.session_directory else None,
                "report_interval": self.report_interval, "checkpoint_interval": self.checkpoint_interval,
                "iterations": self.iterations}


class JobCancelledError(CreateMLError, concurrent.futures.CancelledError):
    """The job was cancelled; its session keeps its work and can be resumed."""


# ---------------------------------------------------------------------------------------------
# Atomic file helpers: a kill -9 at any instant leaves either the old file or the new one.
# ---------------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, writer: Callable[[Any], None]) -> None:
    """Write what `writer` writes into an open binary file to `path`, durably and atomically."""
    atomic_write(path, writer)


def atomic_write_json(path: Path, data: dict) -> None:
    """Write `data` as indented UTF-8 JSON to `path`, durably and atomically."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False).encode()))


# ---------------------------------------------------------------------------------------------
# MLTrainingSession
# ---------------------------------------------------------------------------------------------
class MLTrainingSession:
    """The state of one training run: its data, parameters, phase, features and checkpoints.

    Made by a task's `make_training_session`; persisted in `session_directory` (if set) so that
    `restore_training_session` and `resume` continue after the process ends — even by kill -9.
    """

    def __init__(self, task: type, training_data: AnyDataSource, model_parameters: AnyModelParameters,
                 parameters: MLTrainingSessionParameters):
        self.task = task
        self.training_data = training_data
        self.model_parameters = model_parameters
        self.parameters = parameters
        self.phase = MLPhase.INITIALIZED
        self.iteration = 0  # items extracted (EXTRACTING_FEATURES) or iterations trained (TRAINING)
        self.date = dt.datetime.now()
        self.checkpoints: list[MLCheckpoint] = []
        self.split_seed: int | None = None
        self.history: list[dict] = []  # one row per report: iteration + metrics (for curves)
        self.summary: dict = {}  # data summary the plan records (counts, skipped files)
        self.features = FeatureStore(parameters.directory, writer=self._write_file)
        self._lock = threading.RLock()
        self._files: SessionFiles | None = None  # what this session wrote in its folder
        # While a run is going: (its monotonic start, the seconds of the earlier runs); every save then
        # records summary["elapsed_seconds"], so a session reopened later says how long it has run.
        self._run_clock: tuple[float, float] | None = None
        self._running = False  # run_session holds the folder lock

    # -- Create ML's members -----------------------------------------------------------------
    @property
    def session_directory(self) -> Path | None:
        """The folder the session is kept in (absolute); None for an in-memory session."""
        return self.parameters.directory

    def remove_checkpoints(self, predicate: Callable[[MLCheckpoint], bool]) -> None:
        """Delete the checkpoints (and their files) for which `predicate(checkpoint)` is true."""
        with self._folder_lock(), self._lock:
            keep, dropped = [], []
            for c in self.checkpoints:
                if predicate(c):
                    if c.url is not None and c.phase == MLPhase.TRAINING:
                        self._own_path(c.url)  # refuses a file outside the session folder before anything changes
                    dropped.append(c)
                else:
                    keep.append(c)
            self.checkpoints = keep
            self.save()
            for c in dropped:
                c._state = None
                if c.url is not None and c.phase == MLPhase.TRAINING:
                    self._delete_file(c.url)

    def reuse_extracted_features(self, other: MLTrainingSession) -> None:
        """Take the features `other` already extracted, so this session skips extracting them."""
        if other.task is not self.task:
            raise SessionError(f"cannot reuse features of a {other.task.__name__} session in a "
                               f"{self.task.__name__} session")
        with self._folder_lock(), self._lock, session_writes(self.session_directory):
            n = self.features.copy_from(other.features)
            log.info("reused %d extracted features from %s", n, other.session_directory or "an in-memory session")
            self.save()

    # -- persistence -------------------------------------------------------------------------
    @property
    def elapsed_seconds(self) -> float:
        """Seconds the runs of this session took, as its last save recorded them (0 when none are recorded:
        a session.json from before they were, or a value edited into something that is not a number)."""
        try:
            value = float(self.summary.get("elapsed_seconds", 0.0))
        except (TypeError, ValueError):
            return 0.0
        return value if math.isfinite(value) and value >= 0 else 0.0

    def to_dict(self) -> dict:
        """What session.json holds: the data, parameters, phase, history, features and checkpoints."""
        root = self.session_directory
        clock = self._run_clock  # read once: the run's thread clears it when it ends
        if clock is not None:
            started, before = clock
            self.summary["elapsed_seconds"] = round(before + time.monotonic() - started, 3)
        return {
            "format": SESSION_FORMAT, "task": self.task.__name__, "date": self.date.isoformat(),
            "training_data": self.training_data.to_dict(root), "parameters": self.model_parameters.to_dict(root),
            "session_parameters": self.parameters.to_dict(), "split_seed": self.split_seed,
            "phase": self.phase.value, "iteration": self.iteration, "history": self.history,
            "summary": self.summary, "features": self.features.to_dict(),
            "checkpoints": [c.to_dict(root) for c in self.checkpoints],
        }

    def save(self) -> None:
        """Write session.json atomically (nothing for an in-memory session)."""
        if self.session_directory is None:
            return
        with self._lock, session_writes(self.session_directory):
            self._write_file(SESSION_FILE, json.dumps(self.to_dict(), indent=1, ensure_ascii=False).encode())

    # -- the session folder ------------------------------------------------------------------
    def _own_files(self) -> SessionFiles:
        if self._files is None:
            self._files = SessionFiles.for_folder(self.session_directory)
        return self._files

    def _write_file(self, name: str, data: bytes) -> str:
        """Write `name` in the session folder (atomically, listed as the session's first); returns its SHA-256."""
        root = self.session_directory
        self._own_files().record(name)
        atomic_write_bytes(root / name, lambda f: f.write(data))
        return sha256_of(data)

    def _own_path(self, path) -> str:
        """`path`, a file of the session folder, relative to it (SessionError when it is outside)."""
        root = self.session_directory
        full = session_path(root, path, "the checkpoint")
        return full.relative_to(root).as_posix() if full.is_relative_to(root) else \
            Path(os.path.relpath(os.path.realpath(full), os.path.realpath(root))).as_posix()

    def _delete_file(self, path) -> None:
        """Delete a file the session wrote (only one inside its folder)."""
        name = self._own_path(path)
        if name not in self._own_files().files or not _SESSION_NAMES.fullmatch(name) or name == SESSION_FILE:
            # an edited session.json naming a file of the folder the session did not write (notes.txt, its own list)
            log.warning("%s names %s as a checkpoint, which this session did not write: left alone",
                        self.session_directory / SESSION_FILE, self.session_directory / name)
            return
        with contextlib.suppress(FileNotFoundError):
            (self.session_directory / name).unlink()
        self._own_files().forget(name)

    def _folder_lock(self):
        """The session folder's lock (nothing for in-memory sessions, or while run_session holds it)."""
        if self.session_directory is None or self._running:
            return contextlib.nullcontext()
        return session_lock(self.session_directory)

    def _remove_leftovers(self) -> None:
        """Remove what kills left behind: temporary files of interrupted writes, and checkpoint files that
        were written but never listed in session.json, or were set aside but not yet deleted."""
        if self.session_directory is None or not (self.session_directory / MANIFEST_FILE).exists():
            return
        files = self._own_files()
        for tmp in files.temporaries():
            with contextlib.suppress(OSError):
                tmp.unlink()
        listed = {self._own_path(c.url) for c in self.checkpoints if c.url is not None}
        for name in sorted(files.files):
            if name.startswith("checkpoints/") and name not in listed:
                self._delete_file(self.session_directory / name)

    def _prune_checkpoints(self) -> list[MLCheckpoint]:
        """Keep the latest KEEP_LATEST_CHECKPOINTS training checkpoints and the best by validation; returns the rest
        (dropped from the list, their in-memory weights let go; the caller deletes their files)."""
        training = sorted((c for c in self.checkpoints if c.phase == MLPhase.TRAINING), key=lambda c: c.iteration)
        keep = {id(c) for c in training[-KEEP_LATEST_CHECKPOINTS:]}
        scored = [c for c in training if "validation_accuracy" in c.metrics]
        if scored:
            best = max(scored, key=lambda c: (c.metrics["validation_accuracy"],
                                              -c.metrics.get("validation_loss", 0.0), c.iteration))
            keep.add(id(best))
        dropped = [c for c in training if id(c) not in keep]
        if dropped:
            gone = {id(c) for c in dropped}
            self.checkpoints = [c for c in self.checkpoints if id(c) not in gone]
            for c in dropped:
                c._state = None
        return dropped

    @classmethod
    def restore(cls, task: type, session_parameters: MLTrainingSessionParameters) -> MLTrainingSession:
        """The `task` session saved in `session_parameters.session_directory` (SessionError if missing or damaged)."""
        root = session_parameters.directory
        if root is None:
            raise SessionError("restore_training_session needs session_parameters.session_directory")
        path = root / SESSION_FILE
        d = read_session_file(path)
        if d.get("task") != task.__name__:
            raise SessionError(f"{root} holds a {d.get('task')} session, not a {task.__name__} session")
        try:
            data = task.DataSource.from_dict(d["training_data"], root)
            params = task.ModelParameters.from_dict(d["parameters"], root)
            # Intervals may change on restore (Create ML takes the new session parameters).
            s = cls(task, data, params, session_parameters)
            s.date = dt.datetime.fromisoformat(d["date"])
            s.split_seed = d.get("split_seed")
            s.phase = MLPhase(d["phase"])
            s.iteration = int(d["iteration"])
            s.history = list(d.get("history", []))
            s.summary = dict(d.get("summary", {}))
            features = d.get("features", {})
            checkpoints = [MLCheckpoint.from_dict(c, root) for c in d.get("checkpoints", [])]
        except CreateMLError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise _damaged("the session file", path, f"{type(err).__name__}: {err}") from err
        if not isinstance(features, dict):
            raise _damaged("the session file", path, "its features entry is not an object")
        s.features.load(features)
        s.checkpoints = checkpoints
        return s

    def latest_training_checkpoint(self) -> MLCheckpoint | None:
        """The training checkpoint of the highest iteration; None before any."""
        cps = [c for c in self.checkpoints if c.phase == MLPhase.TRAINING]
        return max(cps, key=lambda c: c.iteration) if cps else None

    def _add_checkpoint(self, phase: MLPhase, iteration: int, url: Path | None, metrics: dict,
                        state: dict | None = None, sha256: str | None = None) -> MLCheckpoint:
        cp = MLCheckpoint(phase, iteration, dt.datetime.now(), url, dict(metrics), sha256=sha256,
                          _state=state if url is None else None, _session_directory=self.session_directory)
        if cp.url is None and cp._state is not None:
            cp._session = self  # in-memory sessions: from_checkpoint reads the session from here
        self.checkpoints = [c for c in self.checkpoints if not (c.phase == phase and c.iteration == iteration)]
        self.checkpoints.append(cp)
        return cp

    # -- views -------------------------------------------------------------------------------
    def __str__(self) -> str:
        return (f"MLTrainingSession<{self.task.__name__}>: phase {self.phase.value}, iteration {self.iteration}, "
                f"{len(self.checkpoints)} checkpoints, directory {self.session_directory or '(in memory)'}")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from .display import session_html

        return session_html(self)


# The run (imported last: session_run builds on the classes above).
from .session_run import MLJob, failure_reason, run_session  # noqa: E402, F401
