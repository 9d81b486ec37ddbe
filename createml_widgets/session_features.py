"""A session's extracted features, kept in its folder as .npz chunks and read back memory-mapped.

A chunk holds, for each shape of feature in it, the keys (`keys.<i>`, a string array) and the features
stacked into one array (`rows.<i>`). The .npz is stored uncompressed (what `np.savez` writes), so each
`rows.<i>` is mapped from the file where it lies: once a chunk is written (or a session is read back),
its features live in the page cache, which the kernel can drop and read again, not in the process's own
memory. A big training matrix is then gathered from the chunks into an array mapped from an unnamed
temporary file in the session folder (the system's temporary folder for a session without one), or,
when the training rows are one chunk's rows in order, is that chunk's array itself: training holds no
second copy of the features, and its matrix can even exceed the memory (benchmarks/README.md, issue 15).

Chunks written before (one .npz member per key) are still read, into memory as before.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ._fileio import atomic_write
from .errors import SessionError

# Arrays smaller than this are read into memory rather than mapped (a mapping costs a page and a kernel
# mapping: not worth it for a hand-pose chunk's few keypoints).
MAP_AT_LEAST_BYTES = 64 * 1024
# A training matrix at least this big is gathered into a mapped temporary file, not into memory.
GATHER_TO_FILE_BYTES = 16 * 1024 * 1024  # about 3,300 photos' image features
GATHER_ROWS = 256  # rows copied at a time into the training matrix (a temporary of ~1 MiB for image features)


def damaged(what: str, path: Path | str, reason: str) -> SessionError:
    """The SessionError for a damaged session file: what it is, where, why, and how to start again."""
    return SessionError(f"{what} {path} is damaged ({reason}); discard the session and train again (on the command "
                        "line: the same train command with --restart)")


@contextlib.contextmanager
def reading_session_file(path: Path | str, what: str) -> Iterator[None]:
    """Reading a session file: a missing or unreadable one is a SessionError naming it (and the way out)."""
    try:
        yield
    except FileNotFoundError:
        raise SessionError(f"{what} {path} is missing; discard the session and train again (on the command line: "
                           "the same train command with --restart)") from None
    except OSError as err:
        raise SessionError(f"cannot read {what} {path}: {err.strerror or err}") from err


def verify_file(path: Path, sha256: str | None, what: str) -> None:
    """Check a session file against the SHA-256 session.json recorded for it, reading it in blocks."""
    with reading_session_file(path, what), open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest() if sha256 else None
    if sha256 and digest != sha256:
        raise damaged(what, path, "its SHA-256 is not the one recorded in session.json")


def _map_member(path: Path, f, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The array of an uncompressed .npy member of the zip `f`, mapped from `path` (copy-on-write);
    None when it is compressed, small or of a layout read more simply into memory."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size < MAP_AT_LEAST_BYTES:
        return None
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"no local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    f.seek(start)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    if dtype.hasobject or fortran:
        return None
    offset = f.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return None
    if offset + nbytes > start + info.file_size:
        raise ValueError(f"{info.filename} is shorter than its header says")
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)


def read_chunk(path: Path) -> tuple[dict[str, np.ndarray], list[tuple[list[str], np.ndarray]]]:
    """A chunk's features: ({key: array} read into memory, [(keys, stacked rows), ...] mapped)."""
    loose: dict[str, np.ndarray] = {}
    blocks: list[tuple[list[str], np.ndarray]] = []
    with open(path, "rb") as f, zipfile.ZipFile(f) as z:
        infos = {i.filename.removesuffix(".npy"): i for i in z.infolist()}
        if "keys.0" not in infos:  # the layout of before: one member per key
            with np.load(f, allow_pickle=False) as npz:
                for key in npz.files:
                    loose[key] = npz[key]
            return loose, blocks
        i = 0
        while f"keys.{i}" in infos:
            with z.open(infos[f"keys.{i}"]) as m:
                keys = [str(k) for k in np.load(io.BytesIO(m.read()), allow_pickle=False)]
            info = infos.get(f"rows.{i}")
            if info is None:
                raise ValueError(f"keys.{i} has no rows.{i}")
            rows = _map_member(path, f, info)
            if rows is None:
                with z.open(info) as m:
                    rows = np.load(io.BytesIO(m.read()), allow_pickle=False)
            if rows.ndim < 1 or len(rows) != len(keys):
                raise ValueError(f"rows.{i} has {len(rows) if rows.ndim else 0} rows for {len(keys)} keys")
            if isinstance(rows, np.memmap):
                blocks.append((keys, rows))
            else:
                loose.update(zip(keys, rows))
            i += 1
    return loose, blocks


def chunk_bytes(pending: dict[str, np.ndarray]) -> bytes:
    """The .npz of a chunk: the features grouped by shape and dtype, each group's keys and stacked rows."""
    groups: dict[tuple, list[str]] = {}
    for key, value in pending.items():
        groups.setdefault((value.shape, value.dtype.str), []).append(key)
    members = {}
    for i, keys in enumerate(groups.values()):
        members[f"keys.{i}"] = np.array(keys, dtype=str)
        members[f"rows.{i}"] = np.stack([pending[k] for k in keys])
    buf = io.BytesIO()
    np.savez(buf, **members)  # uncompressed: rows.<i> can be mapped where it lies
    return buf.getvalue()


class Features(Mapping):
    """key -> features: in memory (just added, or from an old chunk) or a row of a mapped chunk."""

    def __init__(self):
        self._ram: dict[str, np.ndarray] = {}
        self._where: dict[str, tuple[int, int]] = {}  # key -> (block, row)
        self._blocks: list[np.ndarray] = []

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._ram.get(key)
        if value is not None:
            return value
        block, row = self._where[key]
        return self._blocks[block][row]

    def __contains__(self, key) -> bool:
        return key in self._ram or key in self._where

    def __len__(self) -> int:
        return len(self._ram) + len(self._where)

    def __iter__(self) -> Iterator[str]:
        yield from self._ram
        yield from self._where

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        self._where.pop(key, None)
        self._ram[key] = value

    def add_block(self, keys: list[str], rows: np.ndarray) -> None:
        """Serve `keys` from the rows of `rows` (a mapped array) from now on."""
        b = len(self._blocks)
        self._blocks.append(rows)
        for r, key in enumerate(keys):
            self._ram.pop(key, None)
            self._where[key] = (b, r)

    @property
    def mapped(self) -> int:
        """How many features are served from mapped chunks."""
        return len(self._where)

    def matrix(self, keys: list[str], folder: Path | None = None,
               to_file_from: int = GATHER_TO_FILE_BYTES) -> np.ndarray:
        """The features of `keys` as one float32 array (N, ...).

        When they are the rows of one mapped chunk in order, that chunk's array itself (no copy). Otherwise,
        from `to_file_from` bytes on, gathered into an array mapped from an unnamed temporary file in `folder`
        (default: the system's temporary folder): the process holds no second copy, and the file goes when
        the array does. A smaller matrix is stacked in memory.
        """
        if not keys:
            raise ValueError("no features to stack")
        first = self._where.get(keys[0])
        if first is not None and self._blocks[first[0]].dtype == np.float32:
            block, start = first
            if all(self._where.get(k) == (block, start + j) for j, k in enumerate(keys)):
                return self._blocks[block][start:start + len(keys)]
        shape = self[keys[0]].shape
        if len(keys) * int(np.prod(shape, dtype=np.int64)) * 4 < to_file_from:
            return np.stack([self[k] for k in keys]).astype(np.float32, copy=False)
        folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".matrix-") as f:  # Linux: O_TMPFILE, never named
            out = np.memmap(f, dtype=np.float32, mode="w+", shape=(len(keys), *shape))
        for start in range(0, len(keys), GATHER_ROWS):
            part = keys[start:start + GATHER_ROWS]
            out[start:start + len(part)] = np.stack([self[k] for k in part])
        return out


class FeatureStore:
    """Features extracted so far, by item key; persisted as .npz chunks in the session directory."""

    def __init__(self, directory: Path | None, writer: Callable[[str, bytes], str] | None = None):
        self.directory = directory
        self.features = Features()
        self.failed: dict[str, str] = {}
        self.chunks: list[str] = []
        self.digests: dict[str, str] = {}  # chunk name -> SHA-256 of its file
        self._pending: dict[str, np.ndarray] = {}
        # writes a file of the session folder (recording it as the session's): (name, bytes) -> SHA-256
        self._writer = writer

    def add(self, key: str, value: np.ndarray) -> None:
        """Keep the features of item `key` (written with the next `flush`)."""
        self.features[key] = value
        self._pending[key] = value

    def fail(self, key: str, reason: str) -> None:
        """Note that extracting item `key` failed, and why."""
        self.failed[key] = reason

    def __contains__(self, key: str) -> bool:
        return key in self.features or key in self.failed

    def flush(self) -> Path | None:
        """Write features added since the last flush as a new chunk, and serve them from it; returns its path."""
        if self.directory is None or not self._pending:
            return None
        name = f"features/chunk-{len(self.chunks):05d}.npz"
        data = chunk_bytes(self._pending)
        if self._writer is not None:
            self.digests[name] = self._writer(name, data)
        else:
            atomic_write(self.directory / name, data)
            self.digests[name] = hashlib.sha256(data).hexdigest()
        del data
        self.chunks.append(name)
        self._pending = {}
        self._attach(self.directory / name)
        return self.directory / name

    def _attach(self, path: Path) -> None:
        loose, blocks = read_chunk(path)
        for keys, rows in blocks:
            self.features.add_block(keys, rows)
        for key, value in loose.items():
            self.features[key] = value

    def matrix(self, keys: list[str]) -> np.ndarray:
        """The features of `keys` as one float32 array (see `Features.matrix`); gathered in the session folder."""
        folder = None if self.directory is None else Path(self.directory) / "features"
        return self.features.matrix(keys, folder)

    def to_dict(self) -> dict:
        """JSON-ready {chunks, failed, sha256}: the chunk files (with digests) and the failures."""
        return {"chunks": self.chunks, "failed": self.failed, "sha256": self.digests}

    def load(self, d: dict) -> None:
        """Read back what `to_dict` saved: every chunk (digest checked, mapped where it lies) and the failures."""
        self.chunks = [str(c) for c in d.get("chunks", [])]
        self.failed = dict(d.get("failed", {}))
        self.digests = {str(k): str(v) for k, v in dict(d.get("sha256", {})).items()}
        from .session_store import session_path  # (which imports this module)

        for name in self.chunks:
            path = session_path(self.directory, name, "the feature chunk")
            verify_file(path, self.digests.get(name), "the feature chunk")
            try:
                self._attach(path)
            except SessionError:
                raise
            except Exception as err:  # noqa: BLE001 - BadZipFile, ValueError, EOFError ...: all mean damaged
                raise damaged("the feature chunk", path, f"{type(err).__name__}: {err}") from err

    def copy_from(self, other: FeatureStore) -> int:
        """Take every feature `other` has that this store lacks; returns how many."""
        new = [k for k in other.features if k not in self.features]
        for k in new:
            self.add(k, other.features[k])
        for k, reason in other.failed.items():
            self.failed.setdefault(k, reason)
        self.flush()
        return len(new)
