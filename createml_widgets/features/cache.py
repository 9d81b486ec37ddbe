"""The on-disk feature cache, keyed by file content, extractor and augmentation.

A second training run on the same files — with other classifier parameters, or in another
session — finds its features here and skips extraction.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._fileio import atomic_write

if TYPE_CHECKING:
    from ..tasks._hand import KeypointExtractor
    from .image_embedding import ImageEmbeddingExtractor

log = logging.getLogger(__name__)
_digests: dict[tuple, str] = {}
_digest_lock = threading.Lock()


def cache_root() -> Path:
    """`$CREATEML_WIDGETS_CACHE`, else `$XDG_CACHE_HOME/createml_widgets`, else `~/.cache/createml_widgets`."""
    env = os.environ.get("CREATEML_WIDGETS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "createml_widgets"


def file_digest(path: str | os.PathLike) -> str:
    """A content hash of a file.

    Memoised per file identity and state — device, inode, size, modification and change times — so
    the same file reached by another path is not read again, while an edited or replaced file is
    (an edit moves its change time, which no tool can set back; a replacement has a new inode).
    """
    st = os.stat(path)
    memo_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _digest_lock:
        if memo_key in _digests:
            return _digests[memo_key]
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _digest_lock:
        _digests[memo_key] = digest
    return digest


def array_digest(array: np.ndarray) -> str:
    """A digest of an array's bytes, dtype and shape (for features given in memory)."""
    a = np.ascontiguousarray(array)
    return hashlib.blake2b(a.tobytes() + str(a.shape).encode() + str(a.dtype).encode(), digest_size=16).hexdigest()


def feature_key(content_digest: str, extractor_id: str, variant: str = "") -> str:
    """The key of one item's features: its content, how they were extracted, which augmentation."""
    return hashlib.sha1(f"{content_digest}|{extractor_id}|{variant}".encode()).hexdigest()


_headers: dict[bytes, tuple[np.dtype, tuple]] = {}


def _read_npy(data: bytes) -> np.ndarray:
    """The array in the bytes of a .npy file; what np.load returns, without its per-file header parsing.

    Every cache entry of one extractor has the same header, so the parsed header is remembered by its
    bytes. Anything but a plain C-ordered array of a simple dtype goes through np.load.
    """
    if data[:6] == b"\x93NUMPY" and data[6:7] in (b"\x01", b"\x02", b"\x03"):
        size = 2 if data[6] == 1 else 4
        start = 8 + size
        end = start + int.from_bytes(data[8:start], "little")
        header = data[start:end]
        parsed = _headers.get(header)
        if parsed is None:
            import ast

            d = ast.literal_eval(header.decode("latin1"))
            if isinstance(d, dict) and not d.get("fortran_order") and "descr" in d and "shape" in d:
                dtype = np.dtype(d["descr"])
                if not dtype.hasobject and dtype.fields is None:
                    parsed = _headers[header] = (dtype, tuple(int(n) for n in d["shape"]))
        if parsed is not None:
            dtype, shape = parsed
            count = int(np.prod(shape, dtype=np.int64))
            if len(data) - end != count * dtype.itemsize:
                raise ValueError(f"expected {count * dtype.itemsize} bytes of data, found {len(data) - end}")
            return np.frombuffer(data, dtype, count, end).reshape(shape).copy()
    import io

    return np.load(io.BytesIO(data), allow_pickle=False)


class CachedFailure(Exception):
    """A failure remembered by the cache (e.g. no hand in a photo): not worth recomputing."""


# Stands for the file's path in a cached failure's text: entries are keyed by content, so the same
# failure is replayed for every copy of a file and must name the copy at hand, not the first one seen.
SOURCE_TOKEN = "\x00source\x00"


class FeatureCache:
    """One .npy file per item under `root/features/`; writes are atomic and safe across processes."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_root()
        self.enabled = enabled

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / "features" / key[:2] / f"{key}{suffix}"

    def get(self, key: str, source: str | os.PathLike | None = None) -> np.ndarray | CachedFailure | None:
        """The entry under `key`; a cached failure's text names `source` (the file asked about)."""
        if not self.enabled:
            return None
        base = os.path.join(self._features_dir, key[:2], key)
        try:
            with open(base + ".npy", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("ignoring unreadable cache file %s.npy: %s", base, err)
            return None
        else:
            try:
                return _read_npy(data)
            except (OSError, ValueError) as err:  # a truncated file from a crash: recompute
                log.warning("ignoring damaged cache file %s.npy: %s", base, err)
                return None
        fail = base + ".fail.json"
        if os.path.exists(fail):
            try:
                with open(fail, encoding="utf-8") as f:
                    reason = json.load(f)["reason"]
                return CachedFailure(reason.replace(SOURCE_TOKEN, str(source) if source is not None else "the file"))
            except (OSError, ValueError, KeyError):
                return None
        return None

    @property
    def _features_dir(self) -> str:
        return os.path.join(os.fspath(self.root), "features")

    def put(self, key: str, value: np.ndarray | BaseException, source: str | os.PathLike | None = None) -> None:
        """Store features, or a failure; `source` (the file's path) is kept out of a failure's text."""
        if not self.enabled:
            return
        try:
            if isinstance(value, BaseException):
                reason = f"{value.__class__.__name__}: {value}"
                if source is not None and str(source):
                    reason = reason.replace(str(source), SOURCE_TOKEN)
                self._write(self._path(key, ".fail.json"), json.dumps({"reason": reason}).encode())
            else:
                import io

                buf = io.BytesIO()
                np.save(buf, np.asarray(value), allow_pickle=False)
                self._write(self._path(key, ".npy"), buf.getvalue())
        except OSError as err:  # a read-only or full cache must not stop training
            log.warning("cannot write the feature cache at %s: %s", self.root, err)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        atomic_write(path, data, durable=False)  # a lost entry is only extracted again

    def clear(self) -> None:
        """Remove every cached feature (the ONNX backbones stay)."""
        import shutil

        shutil.rmtree(self.root / "features", ignore_errors=True)


class CachingExtractor:
    """Wraps an extractor: answers from the cache, extracts only misses, stores what it extracted.

    The inner extractor is a context manager with `id` and `extract(items) -> list[array | Exception]`;
    it is entered only when there is a miss, so a fully cached run never loads a network.
    Exceptions whose class sets `cacheable = True` (e.g. "no hand detected") are cached too.
    """

    def __init__(self, inner: ImageEmbeddingExtractor | KeypointExtractor, cache: FeatureCache | None = None):
        self.inner = inner
        self.cache = cache if cache is not None else FeatureCache()
        self._entered = False
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        """The inner extractor's id (what cache keys are made from)."""
        return self.inner.id

    def __enter__(self) -> CachingExtractor:
        return self

    def __exit__(self, *exc) -> None:
        if self._entered:
            self.inner.__exit__(*exc)
            self._entered = False

    def extract(self, items: list) -> list:
        """Features of each item, in order: cached ones from the cache, the others extracted (and stored)."""
        results: list = [None] * len(items)
        misses = []
        for i, item in enumerate(items):
            cached = self.cache.get(item.key, getattr(item, "source", None))
            if cached is None:
                misses.append(i)
            else:
                results[i] = cached
        self.hits += len(items) - len(misses)
        self.misses += len(misses)
        if misses:
            if not self._entered:
                self.inner.__enter__()
                self._entered = True
            fresh = self.inner.extract([items[i] for i in misses])
            for i, value in zip(misses, fresh):
                results[i] = value
                if not isinstance(value, BaseException) or getattr(value, "cacheable", False):
                    self.cache.put(items[i].key, value, getattr(items[i], "source", None))
        return results
