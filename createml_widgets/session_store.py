"""What a training session keeps on disk: its list of files (the manifest), the folder lock, its digests and
tensors, its extracted features, and discarding it (only the files it wrote).

A kill -9 at any moment leaves either the old file or the new one: every write goes through the package's one
atomic write (`session.atomic_write_bytes`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ._fileio import atomic_write
from .errors import SessionError
from .session_features import FeatureStore, damaged, reading_session_file  # noqa: F401 - FeatureStore: imported from here

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
# The list of files the session wrote in its folder: discarding a session removes these and nothing else.
MANIFEST_FILE = "session-files.json"
MANIFEST_KIND = "createml_widgets session files"


@contextlib.contextmanager
def session_writes(directory: Path | None) -> Iterator[None]:
    """Turn an OSError while writing into `directory` into a SessionError that names the folder."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise SessionError(f"cannot write to the session directory {directory}: {reason} "
                           f"({err.__class__.__name__}); choose a folder you can write to") from err



def sha256_of(data: bytes) -> str:
    """The SHA-256 of `data`, in hex."""
    return hashlib.sha256(data).hexdigest()


def tensors_bytes(state: dict) -> bytes:
    """`state` (tensors, numbers, dicts) as `torch.save` writes it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_tensors(path: Path, state: dict) -> str:
    """Write `state` atomically; returns the file's SHA-256."""
    data = tensors_bytes(state)
    atomic_write(path, data)
    return sha256_of(data)


_damaged = damaged


def read_verified(path: Path, sha256: str | None, what: str) -> bytes:
    """The bytes of a session file, checked against the SHA-256 session.json recorded for it."""
    with reading_session_file(path, what):
        data = Path(path).read_bytes()
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


def session_path(root: Path, name: str | os.PathLike, what: str) -> Path:
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

    def __init__(self, root: Path, files: Iterable[str] = (), created_directory: bool = False):
        self.root = Path(root)
        self.files: set[str] = set(files)
        self.created_directory = created_directory

    @classmethod
    def read(cls, root: Path) -> SessionFiles | None:
        """The list in `root`'s session-files.json; None when there is none or it is damaged (then rebuilt)."""
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
        """Write the list to session-files.json atomically."""
        manifest = {"kind": MANIFEST_KIND, "format": 1, "created_directory": self.created_directory,
                    "files": sorted(self.files)}
        atomic_write(self.root / MANIFEST_FILE, json.dumps(manifest, indent=1, ensure_ascii=False).encode())

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
def session_lock(root: Path) -> Iterator[None]:
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

    def __init__(self, root: str | os.PathLike):
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
