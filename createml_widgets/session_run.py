"""Running a training session: MLJob (a session running off the calling thread) and the run itself —
extraction, then training, then evaluation, each resumable — over the session state in `session.py`.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import datetime as dt
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .errors import SessionError
from .session import (
    JobCancelledError,
    MLCheckpoint,
    MLPhase,
    MLProgress,
    MLTrainingSession,
)
from .session_store import session_writes, tensors_bytes

if TYPE_CHECKING:
    from .tasks._base import ClassifierTask

log = logging.getLogger(__name__)


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
        """Call `callback(progress)` at each progress report; returns this job."""
        with self._lock:
            self._callbacks["progress"].append(callback)
        return self

    def on_checkpoint(self, callback: Callable[[MLCheckpoint], None]) -> MLJob:
        """Call `callback(checkpoint)` at each checkpoint; returns this job."""
        with self._lock:
            self._callbacks["checkpoint"].append(callback)
        return self

    def on_phase(self, callback: Callable[[MLPhase], None]) -> MLJob:
        """Call `callback(phase)` now and at each change of phase; returns this job."""
        with self._lock:
            self._callbacks["phase"].append(callback)
        callback(self.phase)  # a late subscriber still learns where the job is
        return self

    def add_done_callback(self, callback: Callable[[MLJob], None]) -> MLJob:
        """Call `callback(job)` when the job ends (trained, failed or cancelled); returns this job."""
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
        """True once `cancel()` was called."""
        return self._cancel.is_set()

    def done(self) -> bool:
        """True when the job has ended (trained, failed or cancelled)."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> ClassifierTask:
        """The trained model, waiting up to `timeout` s; raises the training error, or JobCancelledError."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the job ended with (None when it trained), waiting up to `timeout` s."""
        return self._future.exception(timeout)

    def _run(self) -> None:
        try:
            model = run_session(self.session, self)
        except BaseException as err:  # noqa: BLE001 - the future carries it to result()
            self._future.set_exception(err)
        else:
            self._future.set_result(model)

    def start(self) -> MLJob:
        """Run the session on a training thread (what `train()` and `resume()` return); returns this job."""
        self._thread = threading.Thread(target=self._run, name=f"{self.session.task.__name__}-training", daemon=True)
        self._thread.start()
        return self

    def run(self) -> ClassifierTask:
        """Run the session here, on the calling thread (callbacks fire on it); returns the trained model."""
        self._run()
        return self.result()

    def _start(self, background: bool = True) -> MLJob:
        if background:
            return self.start()
        self._run()
        return self

    def __repr__(self) -> str:
        state = "done" if self.done() else ("cancelling" if self.is_canceled else "running")
        return f"<MLJob {self.session.task.__name__} {state}: {self.progress}>"


# ---------------------------------------------------------------------------------------------
# The run: extraction -> training -> evaluation, resumable at every step
# ---------------------------------------------------------------------------------------------
def run_session(session: MLTrainingSession, job: MLJob) -> ClassifierTask:
    """Run `session` to its end (extraction, training, evaluation) under its folder lock; returns the model."""
    session.parameters.validate()
    with session._folder_lock():  # a second run on the same folder is refused
        session._running = True
        session._run_clock = (time.monotonic(), session.elapsed_seconds)
        try:
            with session._lock, session_writes(session.session_directory):
                session._remove_leftovers()
            return _run_session(session, job)
        finally:
            session._running = False
            session._run_clock = None


def _warn_iteration_bound(session: MLTrainingSession, plan) -> None:
    bound = session.parameters.iterations
    if plan.max_iterations > bound:
        params = session.model_parameters
        name = next((n for n in ("max_iterations", "maximum_iterations") if hasattr(params, n)), "iterations")
        message = (f"the model parameters ask for {name}={plan.max_iterations}, but the session stops at "
                   f"MLTrainingSessionParameters.iterations={bound}: this run trains {bound} iterations; pass "
                   f"MLTrainingSessionParameters(iterations={plan.max_iterations}) to train them all")
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _restore_trainer(session: MLTrainingSession, plan, trainer):
    """Load the latest training checkpoint that reads back whole; a damaged one is set aside with a warning and
    the one before it is used. Returns (checkpoint or None, trainer)."""
    bad: list[str] = []
    for cp in sorted((c for c in session.checkpoints if c.phase == MLPhase.TRAINING), key=lambda c: -c.iteration):
        try:
            state = cp._load_state()
            trainer.load_state_dict(state)
        except (SessionError, KeyError, RuntimeError, ValueError, TypeError) as err:
            reason = str(err) if isinstance(err, SessionError) else \
                f"the checkpoint {cp.url} does not fit this session ({type(err).__name__}: {err})"
            bad.append(reason)
            session.checkpoints.remove(cp)
            trainer = session.task._make_trainer(session, plan)  # a failed load may have changed part of it
            continue
        if bad:
            _warn_set_aside(bad, f"training resumes from the previous good checkpoint, iteration {cp.iteration}")
        return cp, trainer
    if bad:
        _warn_set_aside(bad, "no earlier checkpoint reads back whole: training starts again from iteration 1")
    return None, trainer


def _warn_set_aside(reasons: list[str], what_now: str) -> None:
    message = f"{'; '.join(reasons)} — set aside: {what_now}"
    log.warning(message)
    warnings.warn(message, UserWarning, stacklevel=4)


def _run_session(session: MLTrainingSession, job: MLJob):
    from .tasks._base import check_session_outside_data

    task = session.task
    started = time.monotonic()
    check_session_outside_data(session.training_data, session.session_directory)
    plan = task._plan(session)  # validates data and parameters, resolves items and the split
    _warn_iteration_bound(session, plan)
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
    last = None
    if session.phase in (MLPhase.TRAINING, MLPhase.EVALUATING):
        last, trainer = _restore_trainer(session, plan, trainer)
    if last is not None:
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
            if "validation_accuracy" not in metrics:  # the best checkpoint is chosen by validation
                metrics.update(trainer.validation_metrics())
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
        url = digest = None
        if session.session_directory is not None:
            name = f"checkpoints/training-{iteration:05d}.pt"
            digest = session._write_file(name, tensors_bytes(state))
            url = session.session_directory / name
        elif not getattr(trainer, "state_dict_is_snapshot", False):
            # kept in memory: a copy, or later steps would update it through the module's own tensors
            state = copy.deepcopy(state)
        cp = session._add_checkpoint(MLPhase.TRAINING, iteration, url, metrics, state, sha256=digest)
        dropped = session._prune_checkpoints()
        session.save()  # first: a kill now leaves unlisted files (removed on the next run), never missing ones
        for c in dropped:
            if c.url is not None and c.url != url:
                session._delete_file(c.url)
    job._emit("checkpoint", cp)


