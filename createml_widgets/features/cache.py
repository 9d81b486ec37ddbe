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

import numpy as np

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
    """A content hash of a file (memoised per path, size and modification time)."""
    p = Path(path)
    st = p.stat()
    memo_key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if memo_key in _digests:
            return _digests[memo_key]
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _digest_lock:
        _digests[memo_key] = digest
    return digest


def array_digest(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    return hashlib.blake2b(a.tobytes() + str(a.shape).encode() + str(a.dtype).encode(), digest_size=16).hexdigest()


def feature_key(content_digest: str, extractor_id: str, variant: str = "") -> str:
    """The key of one item's features: its content, how they were extracted, which augmentation."""
    return hashlib.sha1(f"{content_digest}|{extractor_id}|{variant}".encode()).hexdigest()


class CachedFailure(Exception):
    """A failure remembered by the cache (e.g. no hand in a photo): not worth recomputing."""


class FeatureCache:
    """One .npy file per item under `root/features/`; writes are atomic and safe across processes."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_root()
        self.enabled = enabled

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / "features" / key[:2] / f"{key}{suffix}"

    def get(self, key: str) -> np.ndarray | CachedFailure | None:
        if not self.enabled:
            return None
        path = self._path(key, ".npy")
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:  # a truncated file from a crash: recompute
            log.warning("ignoring damaged cache file %s: %s", path, err)
            return None
        fail = self._path(key, ".fail.json")
        if fail.exists():
            try:
                return CachedFailure(json.loads(fail.read_text())["reason"])
            except (OSError, ValueError, KeyError):
                return None
        return None

    def put(self, key: str, value: np.ndarray | BaseException) -> None:
        if not self.enabled:
            return
        try:
            if isinstance(value, BaseException):
                self._write(self._path(key, ".fail.json"),
                            json.dumps({"reason": f"{value.__class__.__name__}: {value}"}).encode())
            else:
                import io

                buf = io.BytesIO()
                np.save(buf, np.asarray(value), allow_pickle=False)
                self._write(self._path(key, ".npy"), buf.getvalue())
        except OSError as err:  # a read-only or full cache must not stop training
            log.warning("cannot write the feature cache at %s: %s", self.root, err)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.root / "features", ignore_errors=True)


class CachingExtractor:
    """Wraps an extractor: answers from the cache, extracts only misses, stores what it extracted.

    The inner extractor is a context manager with `id` and `extract(items) -> list[array | Exception]`;
    it is entered only when there is a miss, so a fully cached run never loads a network.
    Exceptions whose class sets `cacheable = True` (e.g. "no hand detected") are cached too.
    """

    def __init__(self, inner, cache: FeatureCache | None = None):
        self.inner = inner
        self.cache = cache if cache is not None else FeatureCache()
        self._entered = False
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.inner.id

    def __enter__(self) -> CachingExtractor:
        return self

    def __exit__(self, *exc) -> None:
        if self._entered:
            self.inner.__exit__(*exc)
            self._entered = False

    def extract(self, items: list) -> list:
        results: list = [None] * len(items)
        misses = []
        for i, item in enumerate(items):
            cached = self.cache.get(item.key)
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
                    self.cache.put(items[i].key, value)
        return results
