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
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._fileio import atomic_write
from .errors import CreateMLError, ParameterError, SessionError

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
SESSION_FORMAT = 1
# The list of files the session wrote in its folder: discarding a session removes these and nothing else.
MANIFEST_FILE = "session-files.json"
MANIFEST_KIND = "createml_widgets session files"
# Training checkpoints a session keeps (in memory and on disk): the latest few plus the best by validation.
KEEP_LATEST_CHECKPOINTS = 5


class MLPhase(StrEnum):
    """The phase a training session is in."""

    INITIALIZED = "initialized"
    EXTRACTING_FEATURES = "extractingFeatures"
    TRAINING = "training"
    EVALUATING = "evaluating"
    INFERENCING = "inferencing"


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
        for name in ("report_interval", "checkpoint_interval", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"MLTrainingSessionParameters.{name}", value, "a positive int")

    @property
    def directory(self) -> Path | None:
        # absolute: a session's files are named relative to it, and a relative folder named them twice over
        # ("s/s/checkpoints/...": pruned checkpoints were never deleted)
        return Path(os.path.abspath(Path(self.session_directory).expanduser())) \
            if self.session_directory is not None else None

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
    """Write what `writer` writes into an open binary file to `path`, durably and atomically."""
    atomic_write(path, writer)


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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensors_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_tensors(path: Path, state: dict) -> str:
    """Write `state` atomically; returns the file's SHA-256."""
    data = tensors_bytes(state)
    atomic_write_bytes(path, lambda f: f.write(data))
    return sha256_of(data)


def _damaged(what: str, path, reason: str) -> SessionError:
    return SessionError(f"{what} {path} is damaged ({reason}); discard the session and train again (on the command "
                        "line: the same train command with --restart)")


def read_verified(path: Path, sha256: str | None, what: str) -> bytes:
    """The bytes of a session file, checked against the SHA-256 session.json recorded for it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SessionError(f"{what} {path} is missing; discard the session and train again (on the command line: "
                           "the same train command with --restart)") from None
    except OSError as err:
        raise SessionError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if sha256 and sha256_of(data) != sha256:
        raise _damaged(what, path, f"its SHA-256 is not the one recorded in {SESSION_FILE}")
    return data


def load_tensors(path: Path, sha256: str | None = None) -> dict:
    """A checkpoint's state (no pickle); SessionError naming the file when it is damaged."""
    data = read_verified(path, sha256, "the checkpoint")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - BadZipFile, UnpicklingError, RuntimeError ...: all mean damaged
        raise _damaged("the checkpoint", path, f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise _damaged("the checkpoint", path, f"it holds a {type(state).__name__}, not a trainer state")
    return state


def session_path(root: Path, name, what: str) -> Path:
    """`name` (relative to the session folder `root`, or absolute) as a path in that folder.

    A path that resolves outside the folder (`../x`, an absolute path elsewhere, a link out) is refused:
    a session reads and deletes only its own files.
    """
    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise SessionError(f"{root / SESSION_FILE} names {what} {name!r}, which is not a file name: the file was "
                           "edited or damaged")
    p = Path(name)
    full = p if p.is_absolute() else Path(root) / p
    real_root = os.path.realpath(root)
    real = os.path.realpath(full)
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise SessionError(f"{root / SESSION_FILE} names {what} {os.fspath(name)!r}, which is outside the session "
                           f"folder {root}: the file was edited or damaged, and a session neither reads nor deletes "
                           "files outside its folder")
    return full


# ---------------------------------------------------------------------------------------------
# The files a session wrote (its manifest), the folder lock, and discarding a session
# ---------------------------------------------------------------------------------------------
_TEMP_NAME = re.compile(r"\.(?P<base>.+)\.[A-Za-z0-9_]{8}")  # the temporary names of atomic_write (and of mkstemp before it)
_LEGACY_NAMES = re.compile(r"(features/chunk-\d{5,}\.npz|checkpoints/training-\d{5,}\.pt)")
# Every name a session writes in its folder (besides its list): a listed name of any other form is not the session's.
_SESSION_NAMES = re.compile(rf"({re.escape(SESSION_FILE)}|{_LEGACY_NAMES.pattern})")


class SessionFiles:
    """The files a session wrote in its folder, kept in `session-files.json` there.

    A name is recorded before its file is first written, so a kill at any moment never leaves a file of
    the session that the list lacks. Discarding the session removes the listed files (and the temporary
    files of interrupted writes of them) and nothing else.
    """

    def __init__(self, root: Path, files=(), created_directory: bool = False):
        self.root = Path(root)
        self.files: set[str] = set(files)
        self.created_directory = created_directory

    @classmethod
    def read(cls, root: Path) -> SessionFiles | None:
        path = Path(root) / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise SessionError(f"cannot read the session's list of its files {path} ({err.strerror or err}); "
                               "nothing was deleted") from err
        except ValueError as err:  # truncated or damaged: rebuilt from session.json and the names a session writes
            message = (f"the session's list of its files {path} is damaged ({type(err).__name__}: {err}): rebuilt from "
                       f"{SESSION_FILE} and the files named as a session names them")
            log.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
            return None
        if not isinstance(d, dict) or d.get("kind") != MANIFEST_KIND or not isinstance(d.get("files"), list):
            raise SessionError(f"{path} is not a list of a session's files (it was edited, or is another program's "
                               f"file); nothing was deleted: pick another session folder")
        files = set()
        for name in d["files"]:
            session_path(root, name, "the session file")
            name = Path(name).as_posix()
            if not _SESSION_NAMES.fullmatch(name):
                # an edited list naming a file the session never writes (notes.txt, photos/a.jpg): not the session's,
                # so it is kept like any other file of the folder
                log.warning("%s lists %r, which is not a file a session writes: left alone", path, name)
                continue
            files.add(name)
        return cls(root, files, bool(d.get("created_directory")))

    @classmethod
    def for_folder(cls, root: Path) -> SessionFiles:
        """The list in `root`; for a session written before lists were kept, what its session.json names."""
        found = cls.read(root)
        if found is not None:
            return found
        root = Path(root)
        files = set()
        if (root / SESSION_FILE).exists():
            files.add(SESSION_FILE)
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                d = json.loads((root / SESSION_FILE).read_text(encoding="utf-8"))
                names = list(d.get("features", {}).get("chunks", [])) + [c.get("url") for c in d.get("checkpoints", [])]
                for name in names:
                    with contextlib.suppress(SessionError):
                        full = session_path(root, name, "a session file")
                        if _SESSION_NAMES.fullmatch(full.relative_to(root).as_posix()):
                            files.add(full.relative_to(root).as_posix())
            for sub in ("features", "checkpoints"):
                if (root / sub).is_dir() and not (root / sub).is_symlink():
                    for entry in os.scandir(root / sub):
                        if entry.is_file(follow_symlinks=False) and _LEGACY_NAMES.fullmatch(f"{sub}/{entry.name}"):
                            files.add(f"{sub}/{entry.name}")
        return cls(root, files)

    def save(self) -> None:
        atomic_write_json(self.root / MANIFEST_FILE, {"kind": MANIFEST_KIND, "format": 1,
                                                      "created_directory": self.created_directory,
                                                      "files": sorted(self.files)})

    def record(self, name: str) -> None:
        """Note `name` (relative to the folder) before it is first written; refuses to overwrite another's file."""
        name = Path(name).as_posix()
        if name in self.files:
            return
        if not _SESSION_NAMES.fullmatch(name):
            raise ValueError(f"{name!r} is not a name of a session file")  # a bug here, never the user's doing
        path = self.root / name
        if path.exists() or path.is_symlink():
            raise SessionError(f"{path} is in the way: this session did not write it and will not overwrite it; "
                               "move it, or pick another session folder")
        self.files.add(name)
        self.save()

    def forget(self, name: str) -> None:
        """Drop `name` (its file was deleted) from the list, on disk too: the list never names a file long gone."""
        name = Path(name).as_posix()
        if name in self.files:
            self.files.discard(name)
            self.save()

    def owns(self, name: str) -> bool:
        """Whether `name` (relative, posix) is the session's: a listed file, the list, or a temp file of either."""
        if name in self.files or name == MANIFEST_FILE:
            return True
        folder, _, base = name.rpartition("/")
        m = _TEMP_NAME.fullmatch(base)
        if m is None:
            return False
        target = f"{folder}/{m['base']}" if folder else m["base"]
        return target in self.files or target == MANIFEST_FILE

    def temporaries(self) -> list[Path]:
        """Temporary files an interrupted write (kill -9) left behind."""
        out = []
        for folder in sorted({"", *(n.rpartition("/")[0] for n in self.files)}):
            d = self.root / folder if folder else self.root
            if not d.is_dir() or d.is_symlink():
                continue
            for entry in os.scandir(d):
                name = f"{folder}/{entry.name}" if folder else entry.name
                if (entry.is_file(follow_symlinks=False) and _TEMP_NAME.fullmatch(entry.name)
                        and name not in self.files and self.owns(name)):
                    out.append(Path(entry.path))
        return out

    def others(self, shown: int = 5) -> tuple[list[str], int]:
        """What else is in the folder (the first `shown` entries, and how many in all)."""
        found: list[str] = []
        own_dirs = {n.rpartition("/")[0] for n in self.files if "/" in n}
        own_dirs |= {"/".join(d.split("/")[:i]) for d in list(own_dirs) for i in range(1, d.count("/") + 1)}

        def walk(folder: str) -> None:
            d = self.root / folder if folder else self.root
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                name = f"{folder}/{entry.name}" if folder else entry.name
                if entry.is_dir(follow_symlinks=False) and name in own_dirs:
                    walk(name)
                elif not (entry.is_file(follow_symlinks=False) or entry.is_symlink()) or not self.owns(name):
                    found.append(name + ("/" if entry.is_dir(follow_symlinks=False) else ""))

        walk("")
        return found[:shown], len(found)


_FOLDER_LOCKS: dict[str, list] = {}  # real path -> [fd, owning thread, depth]
_FOLDER_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def session_lock(root: Path):
    """Hold an exclusive lock on the session folder (flock on the folder itself) while the block runs.

    Another process, or another thread of this one, that tries to lock the same folder meanwhile is refused
    with a SessionError; the thread holding it may lock it again.
    """
    key = os.path.realpath(root)
    me = threading.get_ident()
    with _FOLDER_LOCKS_GUARD:
        held = _FOLDER_LOCKS.get(key)
        if held is not None:
            if held[1] != me:
                raise SessionBusyError(root)
            held[2] += 1
        else:
            try:
                fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as err:
                raise SessionError(f"cannot open the session folder {root}: {err.strerror or err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise SessionBusyError(root) from None
            _FOLDER_LOCKS[key] = [fd, me, 1]
    try:
        yield
    finally:
        with _FOLDER_LOCKS_GUARD:
            held = _FOLDER_LOCKS[key]
            held[2] -= 1
            if held[2] == 0:
                del _FOLDER_LOCKS[key]
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])


class SessionBusyError(SessionError):
    """Another training run holds the session folder."""

    def __init__(self, root):
        super().__init__(f"another training run is using the session folder {root}; wait for it to finish "
                         "(or stop it), or use another session folder")


def prepare_session_directory(root: Path) -> None:
    """Create the session folder; a folder this package created is noted so that discarding removes it too."""
    if root.is_dir():
        return
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        if not root.is_dir():
            raise SessionError(f"cannot create the session directory {root}: a file of that name is in the way") from None
        return
    except OSError as err:
        raise SessionError(f"cannot create the session directory {root}: {err}") from err
    with session_writes(root):
        SessionFiles(root, created_directory=True).save()


# ---------------------------------------------------------------------------------------------
# Extracted features of a session
# ---------------------------------------------------------------------------------------------
class FeatureStore:
    """Features extracted so far, by item key; persisted as .npz chunks in the session directory."""

    def __init__(self, directory: Path | None, writer: Callable[[str, bytes], str] | None = None):
        self.directory = directory
        self.features: dict[str, np.ndarray] = {}
        self.failed: dict[str, str] = {}
        self.chunks: list[str] = []
        self.digests: dict[str, str] = {}  # chunk name -> SHA-256 of its file
        self._pending: dict[str, np.ndarray] = {}
        # writes a file of the session folder (recording it as the session's): (name, bytes) -> SHA-256
        self._writer = writer

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
        buf = io.BytesIO()
        np.savez(buf, **self._pending)
        data = buf.getvalue()
        if self._writer is not None:
            self.digests[name] = self._writer(name, data)
        else:
            atomic_write_bytes(self.directory / name, lambda f: f.write(data))
            self.digests[name] = sha256_of(data)
        self.chunks.append(name)
        self._pending = {}
        return self.directory / name

    def to_dict(self) -> dict:
        return {"chunks": self.chunks, "failed": self.failed, "sha256": self.digests}

    def load(self, d: dict) -> None:
        self.chunks = [str(c) for c in d.get("chunks", [])]
        self.failed = dict(d.get("failed", {}))
        self.digests = {str(k): str(v) for k, v in dict(d.get("sha256", {})).items()}
        for name in self.chunks:
            path = session_path(self.directory, name, "the feature chunk")
            data = read_verified(path, self.digests.get(name), "the feature chunk")
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    for key in z.files:
                        self.features[key] = z[key]
            except Exception as err:  # noqa: BLE001 - BadZipFile, ValueError, EOFError ...: all mean damaged
                raise _damaged("the feature chunk", path, f"{type(err).__name__}: {err}") from err

    def copy_from(self, other: FeatureStore) -> int:
        """Take every feature `other` has that this store lacks; returns how many."""
        new = {k: v for k, v in other.features.items() if k not in self.features}
        for k, v in new.items():
            self.add(k, v)
        for k, reason in other.failed.items():
            self.failed.setdefault(k, reason)
        self.flush()
        return len(new)


def read_session_file(path: Path) -> dict:
    """The contents of a session.json (SessionError naming it when it is missing or damaged)."""
    if not path.exists():
        raise SessionError(f"no training session in {path.parent} (missing {SESSION_FILE})")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SessionError(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise _damaged("the session file", path, f"{type(err).__name__}: {err}") from err
    if not isinstance(d, dict):
        raise _damaged("the session file", path, f"it holds a JSON {type(d).__name__}, not an object")
    return d


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
        self.features = FeatureStore(parameters.directory, writer=self._write_file)
        self._lock = threading.RLock()
        self._files: SessionFiles | None = None  # what this session wrote in its folder
        self._running = False  # run_session holds the folder lock

    # -- Create ML's members -----------------------------------------------------------------
    @property
    def session_directory(self) -> Path | None:
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
    session.parameters.validate()
    with session._folder_lock():  # a second run on the same folder is refused
        session._running = True
        try:
            with session._lock, session_writes(session.session_directory):
                session._remove_leftovers()
            return _run_session(session, job)
        finally:
            session._running = False


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


def remove_session_directory(path: str | os.PathLike, keep_folder: bool = False, keep_others: bool = False) -> None:
    """Discard a training session: delete the files it wrote in its folder (as its session-files.json lists them),
    and the folder when the session created it.

    Refuses, deleting nothing, when the folder holds anything else (naming what it would keep), or when a
    training run is using it. With `keep_folder`, the folder stays (empty) for a new session; with
    `keep_others`, the session's own files are removed even when other files are there (which stay, with the folder).
    """
    root = Path(path)
    if not root.is_dir():
        raise SessionError(f"{root} is not a folder")
    with session_lock(root):
        if not (root / SESSION_FILE).exists() and not (root / MANIFEST_FILE).exists():
            raise SessionError(f"{root} is not a training session directory; nothing was deleted")
        files = SessionFiles.for_folder(root)
        shown, count = files.others()
        if count and not keep_others:
            more = f" and {count - len(shown)} more" if count > len(shown) else ""
            raise SessionError(f"will not discard the training session in {root}: the folder also holds "
                               f"{', '.join(shown)}{more}, which the session did not write; nothing was deleted. "
                               "Move those elsewhere, or use another session folder")
        with session_writes(root):
            for tmp in files.temporaries():
                tmp.unlink(missing_ok=True)
            folders = set()
            for name in sorted(files.files):
                full = session_path(root, name, "the session file")
                full.unlink(missing_ok=True)
                folders.add(full.parent)
            for folder in sorted(folders, key=lambda f: -len(f.parts)):
                if folder != root:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only when empty
            if keep_folder:
                SessionFiles(root, created_directory=files.created_directory).save()
                return
            (root / MANIFEST_FILE).unlink(missing_ok=True)
            if files.created_directory:
                with contextlib.suppress(OSError):
                    root.rmdir()
