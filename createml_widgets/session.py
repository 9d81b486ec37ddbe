"""The one training engine every task shares: sessions, jobs, checkpoints, phases and progress.

A task class (image, hand pose, hand action) supplies only a *plan* (which items to extract
features from, with which extractor), a trainer (its network and data batches) and a builder
for the finished model. Everything else — persistence in the session directory, feature
extraction with resume, the training loop with reports and checkpoints, cancellation and the
asynchronous MLJob — lives here.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CreateMLError, ParameterError, SessionError

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
SESSION_FORMAT = 1


class MLPhase(StrEnum):
    """The phase a training session is in."""

    INITIALIZED = "initialized"
    EXTRACTING_FEATURES = "extractingFeatures"
    TRAINING = "training"
    EVALUATING = "evaluating"
    INFERENCING = "inferencing"

    def __str__(self) -> str:
        return self.value


class Metric(StrEnum):
    """Keys of `MLProgress.metrics` and `MLCheckpoint.metrics`."""

    ACCURACY = "accuracy"
    LOSS = "loss"
    VALIDATION_ACCURACY = "validation_accuracy"
    VALIDATION_LOSS = "validation_loss"

    def __str__(self) -> str:
        return self.value


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
    # In-memory state for sessions without a directory (never serialised).
    _state: dict | None = field(default=None, repr=False, compare=False)
    _session_directory: Path | None = field(default=None, repr=False, compare=False)

    def to_dict(self, root: Path | None = None) -> dict:
        url = None
        if self.url is not None:
            url = os.path.relpath(self.url, root) if root is not None else str(self.url)
        return {"phase": self.phase.value, "iteration": self.iteration, "date": self.date.isoformat(),
                "url": url, "metrics": {str(k): float(v) for k, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> MLCheckpoint:
        url = d.get("url")
        path = (root / url if root is not None and not os.path.isabs(url) else Path(url)) if url else None
        return cls(MLPhase(d["phase"]), int(d["iteration"]), dt.datetime.fromisoformat(d["date"]), path,
                   dict(d.get("metrics", {})), _session_directory=root)


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
        for name in ("report_interval", "checkpoint_interval", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"MLTrainingSessionParameters.{name}", value, "a positive int")

    @property
    def directory(self) -> Path | None:
        return Path(self.session_directory).expanduser() if self.session_directory is not None else None

    def to_dict(self) -> dict:
        return {"session_directory": str(self.session_directory) if self.session_directory else None,
                "report_interval": self.report_interval, "checkpoint_interval": self.checkpoint_interval,
                "iterations": self.iterations}


class JobCancelledError(CreateMLError, concurrent.futures.CancelledError):
    """The job was cancelled; its session keeps its work and can be resumed."""


# ---------------------------------------------------------------------------------------------
# Atomic file helpers: a kill -9 at any instant leaves either the old file or the new one.
# ---------------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, writer: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def session_writes(directory: Path | None):
    """Turn an OSError while writing into `directory` into a SessionError that names the folder."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise SessionError(f"cannot write to the session directory {directory}: {reason} "
                           f"({err.__class__.__name__}); choose a folder you can write to") from err


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False).encode()))


def save_tensors(path: Path, state: dict) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# Extracted features of a session
# ---------------------------------------------------------------------------------------------
class FeatureStore:
    """Features extracted so far, by item key; persisted as .npz chunks in the session directory."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.features: dict[str, np.ndarray] = {}
        self.failed: dict[str, str] = {}
        self.chunks: list[str] = []
        self._pending: dict[str, np.ndarray] = {}

    def add(self, key: str, value: np.ndarray) -> None:
        self.features[key] = value
        self._pending[key] = value

    def fail(self, key: str, reason: str) -> None:
        self.failed[key] = reason

    def __contains__(self, key: str) -> bool:
        return key in self.features or key in self.failed

    def flush(self) -> Path | None:
        """Write features added since the last flush as a new chunk; returns its path."""
        if self.directory is None or not self._pending:
            return None
        name = f"features/chunk-{len(self.chunks):05d}.npz"
        pending = self._pending
        atomic_write_bytes(self.directory / name, lambda f: np.savez(f, **pending))
        self.chunks.append(name)
        self._pending = {}
        return self.directory / name

    def to_dict(self) -> dict:
        return {"chunks": self.chunks, "failed": self.failed}

    def load(self, d: dict) -> None:
        self.chunks = list(d.get("chunks", []))
        self.failed = dict(d.get("failed", {}))
        for name in self.chunks:
            with np.load(self.directory / name, allow_pickle=False) as z:
                for key in z.files:
                    self.features[key] = z[key]

    def copy_from(self, other: FeatureStore) -> int:
        """Take every feature `other` has that this store lacks; returns how many."""
        new = {k: v for k, v in other.features.items() if k not in self.features}
        for k, v in new.items():
            self.add(k, v)
        for k, reason in other.failed.items():
            self.failed.setdefault(k, reason)
        self.flush()
        return len(new)


# ---------------------------------------------------------------------------------------------
# MLTrainingSession
# ---------------------------------------------------------------------------------------------
class MLTrainingSession:
    """The state of one training run: its data, parameters, phase, features and checkpoints.

    Made by a task's `make_training_session`; persisted in `session_directory` (if set) so that
    `restore_training_session` and `resume` continue after the process ends — even by kill -9.
    """

    def __init__(self, task: type, training_data, model_parameters, parameters: MLTrainingSessionParameters):
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
        self.features = FeatureStore(parameters.directory)
        self._lock = threading.RLock()

    # -- Create ML's members -----------------------------------------------------------------
    @property
    def session_directory(self) -> Path | None:
        return self.parameters.directory

    def remove_checkpoints(self, predicate: Callable[[MLCheckpoint], bool]) -> None:
        """Delete the checkpoints (and their files) for which `predicate(checkpoint)` is true."""
        with self._lock:
            keep = []
            for c in self.checkpoints:
                if predicate(c):
                    if c.url is not None and c.phase == MLPhase.TRAINING:
                        Path(c.url).unlink(missing_ok=True)
                else:
                    keep.append(c)
            self.checkpoints = keep
            self.save()

    def reuse_extracted_features(self, other: MLTrainingSession) -> None:
        """Take the features `other` already extracted, so this session skips extracting them."""
        if other.task is not self.task:
            raise SessionError(f"cannot reuse features of a {other.task.__name__} session in a "
                               f"{self.task.__name__} session")
        with self._lock, session_writes(self.session_directory):
            n = self.features.copy_from(other.features)
            log.info("reused %d extracted features from %s", n, other.session_directory or "an in-memory session")
            self.save()

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        root = self.session_directory
        return {
            "format": SESSION_FORMAT, "task": self.task.__name__, "date": self.date.isoformat(),
            "training_data": self.training_data.to_dict(root), "parameters": self.model_parameters.to_dict(root),
            "session_parameters": self.parameters.to_dict(), "split_seed": self.split_seed,
            "phase": self.phase.value, "iteration": self.iteration, "history": self.history,
            "summary": self.summary, "features": self.features.to_dict(),
            "checkpoints": [c.to_dict(root) for c in self.checkpoints],
        }

    def save(self) -> None:
        if self.session_directory is None:
            return
        with self._lock, session_writes(self.session_directory):
            atomic_write_json(self.session_directory / SESSION_FILE, self.to_dict())

    @classmethod
    def restore(cls, task: type, session_parameters: MLTrainingSessionParameters) -> MLTrainingSession:
        root = session_parameters.directory
        if root is None:
            raise SessionError("restore_training_session needs session_parameters.session_directory")
        path = root / SESSION_FILE
        if not path.exists():
            raise SessionError(f"no training session in {root} (missing {SESSION_FILE})")
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SessionError(f"cannot read {path}: {err}") from err
        if d.get("task") != task.__name__:
            raise SessionError(f"{root} holds a {d.get('task')} session, not a {task.__name__} session")
        data = task.DataSource.from_dict(d["training_data"], root)
        params = task.ModelParameters.from_dict(d["parameters"], root)
        # Intervals may change on restore (Create ML takes the new session parameters).
        s = cls(task, data, params, session_parameters)
        s.date = dt.datetime.fromisoformat(d["date"])
        s.split_seed = d.get("split_seed")
        s.phase = MLPhase(d["phase"])
        s.iteration = int(d["iteration"])
        s.history = d.get("history", [])
        s.summary = d.get("summary", {})
        s.features.load(d.get("features", {}))
        s.checkpoints = [MLCheckpoint.from_dict(c, root) for c in d.get("checkpoints", [])]
        return s

    def latest_training_checkpoint(self) -> MLCheckpoint | None:
        cps = [c for c in self.checkpoints if c.phase == MLPhase.TRAINING]
        return max(cps, key=lambda c: c.iteration) if cps else None

    def _add_checkpoint(self, phase: MLPhase, iteration: int, url: Path | None, metrics: dict,
                        state: dict | None = None) -> MLCheckpoint:
        cp = MLCheckpoint(phase, iteration, dt.datetime.now(), url, dict(metrics),
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


# ---------------------------------------------------------------------------------------------
# MLJob: a session running off the calling thread
# ---------------------------------------------------------------------------------------------
class MLJob:
    """A training run in the background. Callbacks fire on the training thread.

    `result()` waits for the trained model (raising the training error, or JobCancelledError).
    """

    def __init__(self, session: MLTrainingSession):
        self.session = session
        self.start_date = dt.datetime.now()
        self._future: concurrent.futures.Future = concurrent.futures.Future()
        self._cancel = threading.Event()
        self._callbacks: dict[str, list[Callable]] = {"progress": [], "checkpoint": [], "phase": []}
        self._lock = threading.Lock()
        self.progress: MLProgress = MLProgress(session.phase)
        self.phase: MLPhase = session.phase
        self._thread: threading.Thread | None = None

    # -- events ------------------------------------------------------------------------------
    def on_progress(self, callback: Callable[[MLProgress], None]) -> MLJob:
        with self._lock:
            self._callbacks["progress"].append(callback)
        return self

    def on_checkpoint(self, callback: Callable[[MLCheckpoint], None]) -> MLJob:
        with self._lock:
            self._callbacks["checkpoint"].append(callback)
        return self

    def on_phase(self, callback: Callable[[MLPhase], None]) -> MLJob:
        with self._lock:
            self._callbacks["phase"].append(callback)
        callback(self.phase)  # a late subscriber still learns where the job is
        return self

    def add_done_callback(self, callback: Callable[[MLJob], None]) -> MLJob:
        self._future.add_done_callback(lambda _f: callback(self))
        return self

    def _emit(self, kind: str, value) -> None:
        with self._lock:
            callbacks = list(self._callbacks[kind])
        for cb in callbacks:
            try:
                cb(value)
            except Exception:  # a broken display must not kill training
                log.exception("MLJob %s callback failed", kind)

    def _report(self, progress: MLProgress) -> None:
        self.progress = progress
        self._emit("progress", progress)

    def _set_phase(self, phase: MLPhase) -> None:
        if phase != self.phase:
            self.phase = phase
            self._emit("phase", phase)

    # -- control -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop at the next batch or iteration; the session keeps its work for `resume`."""
        self._cancel.set()

    @property
    def is_canceled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None):
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None):
        return self._future.exception(timeout)

    def _run(self) -> None:
        try:
            model = run_session(self.session, self)
        except BaseException as err:  # noqa: BLE001 - the future carries it to result()
            self._future.set_exception(err)
        else:
            self._future.set_result(model)

    def _start(self, background: bool = True) -> MLJob:
        if background:
            self._thread = threading.Thread(target=self._run, name=f"{self.session.task.__name__}-training",
                                            daemon=True)
            self._thread.start()
        else:
            self._run()
        return self

    def __repr__(self) -> str:
        state = "done" if self.done() else ("cancelling" if self.is_canceled else "running")
        return f"<MLJob {self.session.task.__name__} {state}: {self.progress}>"


# ---------------------------------------------------------------------------------------------
# The run: extraction -> training -> evaluation, resumable at every step
# ---------------------------------------------------------------------------------------------
def run_session(session: MLTrainingSession, job: MLJob):
    task = session.task
    started = time.monotonic()
    session.parameters.validate()
    plan = task._plan(session)  # validates data and parameters, resolves items and the split
    session.save()

    # 1. Feature extraction -----------------------------------------------------------------
    todo = [item for item in plan.items if item.key not in session.features]
    total = len(plan.items)
    if todo:
        session.phase = MLPhase.EXTRACTING_FEATURES
        job._set_phase(session.phase)
        done = total - len(todo)
        batch = max(1, plan.extraction_batch_size)
        from .features.distributed import iter_extraction  # here, or on a Dask cluster if one is set

        with plan.extractor as extractor, contextlib.closing(
                iter_extraction(extractor, todo, batch, lambda: job.is_canceled)) as batches:
            for b, (chunk, results) in enumerate(batches):
                if job.is_canceled:
                    _flush_extraction(session, done)
                    raise JobCancelledError("cancelled during feature extraction; resume to continue")
                for item, result in zip(chunk, results):
                    if isinstance(result, BaseException):
                        session.features.fail(item.key, failure_reason(result))
                    else:
                        session.features.add(item.key, np.asarray(result, dtype=np.float32))
                done += len(chunk)
                session.iteration = done
                if (b + 1) % session.parameters.checkpoint_interval == 0:
                    _flush_extraction(session, done)
                job._report(MLProgress(session.phase, done, total, time.monotonic() - started))
            session.summary["extraction"] = {"items": total, "resumed_from": total - len(todo),
                                             "from_cache": getattr(extractor, "hits", 0),
                                             "extracted": getattr(extractor, "misses", len(todo))}
        _flush_extraction(session, done)

    # 2. Training -------------------------------------------------------------------------------
    trainer = task._make_trainer(session, plan)
    max_iter = min(plan.max_iterations, session.parameters.iterations)
    start_iter = 0
    last = session.latest_training_checkpoint()
    if session.phase in (MLPhase.TRAINING, MLPhase.EVALUATING) and last is not None:
        state = last._state if last.url is None else load_tensors(last.url)
        trainer.load_state_dict(state)
        start_iter = last.iteration
        session.history = [h for h in session.history if h["iteration"] <= start_iter]
    session.phase = MLPhase.TRAINING
    session.iteration = start_iter
    job._set_phase(session.phase)
    metrics: dict[str, float] = {}
    for it in range(start_iter + 1, max_iter + 1):
        if job.is_canceled:
            _checkpoint_training(session, job, trainer, it - 1, metrics)
            raise JobCancelledError(f"cancelled at training iteration {it - 1}; resume to continue")
        metrics = trainer.step()
        session.iteration = it
        if it % session.parameters.report_interval == 0 or it == max_iter:
            metrics.update(trainer.validation_metrics())
            session.history.append({"iteration": it, **{str(k): float(v) for k, v in metrics.items()}})
            job._report(MLProgress(session.phase, it, max_iter, time.monotonic() - started, dict(metrics)))
        if it % session.parameters.checkpoint_interval == 0 or it == max_iter:
            _checkpoint_training(session, job, trainer, it, metrics)
    if start_iter >= max_iter and last is None:  # nothing to train (max_iter == 0 is rejected earlier)
        _checkpoint_training(session, job, trainer, start_iter, metrics)

    # 3. Evaluation ------------------------------------------------------------------------------
    session.phase = MLPhase.EVALUATING
    job._set_phase(session.phase)
    session.save()
    model = task._build(session, plan, trainer)
    job._report(MLProgress(session.phase, max_iter, max_iter, time.monotonic() - started,
                           dict(job.progress.metrics)))
    return model


def failure_reason(error: BaseException) -> str:
    """How a failed item is reported: the error's class and message."""
    from .features.cache import CachedFailure

    return str(error) if isinstance(error, CachedFailure) else f"{error.__class__.__name__}: {error}"


def _flush_extraction(session: MLTrainingSession, done: int) -> None:
    with session._lock, session_writes(session.session_directory):
        url = session.features.flush()
        if url is not None:
            session._add_checkpoint(MLPhase.EXTRACTING_FEATURES, done, url, {})
        session.save()


def _checkpoint_training(session: MLTrainingSession, job: MLJob, trainer, iteration: int, metrics: dict) -> None:
    state = trainer.state_dict()
    with session._lock, session_writes(session.session_directory):
        url = None
        if session.session_directory is not None:
            url = session.session_directory / "checkpoints" / f"training-{iteration:05d}.pt"
            save_tensors(url, state)
        elif not getattr(trainer, "state_dict_is_snapshot", False):
            # kept in memory: a copy, or later steps would update it through the module's own tensors
            state = copy.deepcopy(state)
        cp = session._add_checkpoint(MLPhase.TRAINING, iteration, url, metrics, state)
        session.save()
    job._emit("checkpoint", cp)


def remove_session_directory(path: str | os.PathLike) -> None:
    """Delete a session directory made by this package (refuses other folders)."""
    p = Path(path)
    if not (p / SESSION_FILE).exists():
        raise SessionError(f"{p} is not a training session directory")
    shutil.rmtree(p)
