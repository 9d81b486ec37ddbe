"""Feature extraction on a Dask cluster, when the user points at one.

    CREATEML_WIDGETS_SCHEDULER=tcp://host:8786 python -m createml_widgets train image photos/

or, in Python::

    from dask.distributed import Client
    import createml_widgets as cmw

    client = Client("tcp://host:8786")           # or Client(LocalCluster(...)), a dask-jobqueue cluster ...
    with cmw.use_cluster(client):                # or cmw.use_cluster("tcp://host:8786")
        model = cmw.MLImageClassifier(data)

Without either, extraction runs here (the local process pool), as before.

How a run goes (`iter_extraction`, called by the session engine where it extracts):

* the feature cache is asked first, here: what is cached is never sent out;
* the misses go out in batches (the plan's extraction batch: 32 photos, 8 clips), a few per worker
  thread in flight; each worker builds the task's extractor once (MediaPipe graphs, the backbone's
  ONNX session) and keeps it for every later batch and run;
* a batch carries file paths when the workers see the same files (shared storage: the path exists there
  with the same size), else the files' bytes (`shared_storage="auto"` tries paths and switches to bytes
  for the rest of the run at the first batch a worker cannot read; True/False force one);
* results come back as each batch finishes and go straight into the content-keyed feature cache and the
  session, so a run killed halfway resumes without redoing finished items;
* a worker lost mid-run: Dask's scheduler hands its batches to the other workers. A batch that keeps
  killing workers is split and retried item by item; an item that kills a worker by itself is reported
  as a failed file, like an unreadable one;
* cancel stops at once: batches in flight are dropped, finished ones are kept.

Workers import only this package (never the caller's __main__): the work sent is a function of this
module applied to picklable package objects. A worker must have the same createml-widgets, MediaPipe and
backbone versions as this process: every batch answers with the extractor id the worker computed, and
a mismatch stops the run with an error naming the worker.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CreateMLError, UnreadableFileError

if TYPE_CHECKING:
    from distributed import Client

    from .cache import CachingExtractor

log = logging.getLogger(__name__)

SCHEDULER_ENV = "CREATEML_WIDGETS_SCHEDULER"
# Batches in flight per worker thread: enough to hide a round trip, few enough that cancel is quick and
# a lost worker loses little.
IN_FLIGHT_PER_THREAD = 2
POLL_S = 0.02
CONNECT_TIMEOUT_S = 20

_setting_lock = threading.Lock()
_setting: dict = {"cluster": None, "shared_storage": "auto"}
_env_clients: dict[str, object] = {}


class ClusterError(CreateMLError, RuntimeError):
    """The Dask cluster cannot be reached or used."""


class _Setting(contextlib.AbstractContextManager):
    """What `use_cluster` returns: the setting is already made; `with` restores the previous one."""

    def __init__(self, previous: dict):
        self._previous = previous

    def __exit__(self, *exc) -> None:
        with _setting_lock:
            _setting.clear()
            _setting.update(self._previous)


def use_cluster(cluster: Client | str | None = None, *, shared_storage: bool | str = "auto") -> _Setting:
    """Extract features on a Dask cluster from now on (or inside a `with` block).

    cluster: a `dask.distributed.Client`, a scheduler address ("tcp://host:8786"), or None to extract
        here again (None also ignores $CREATEML_WIDGETS_SCHEDULER while it is in force).
    shared_storage: "auto" (send paths while the workers can read them, else bytes), True (always
        paths: every worker mounts the data at the same path), False (always bytes).
    """
    if shared_storage not in ("auto", True, False):
        from ..errors import ParameterError

        raise ParameterError("shared_storage", shared_storage, '"auto", True or False')
    if cluster is not None and not isinstance(cluster, str):
        _check_client(cluster)
    with _setting_lock:
        previous = dict(_setting)
        _setting.update(cluster=cluster if cluster is not None else False, shared_storage=shared_storage)
    return _Setting(previous)


def _check_client(client) -> None:
    try:
        from distributed import Client
    except ImportError as err:
        raise ClusterError(_missing_dask()) from err
    if not isinstance(client, Client):
        from ..errors import ParameterError

        raise ParameterError("use_cluster(cluster)", client,
                             'a dask.distributed.Client, a scheduler address such as "tcp://host:8786", or None')


def _missing_dask() -> str:
    return ("extraction on a Dask cluster needs dask.distributed: pip install 'createml-widgets[distributed]' "
            f"(or unset {SCHEDULER_ENV} to extract on this machine)")


def current_client() -> Client | None:
    """The Client extraction runs on now, or None (this machine).

    `use_cluster(...)` wins; else $CREATEML_WIDGETS_SCHEDULER (one Client per address, made on first use
    and kept).
    """
    with _setting_lock:
        cluster = _setting["cluster"]
    if cluster is False:
        return None
    if cluster is None:
        address = os.environ.get(SCHEDULER_ENV, "").strip()
        if not address:
            return None
        cluster = address
    if not isinstance(cluster, str):
        return cluster
    return _client_for(cluster, "use_cluster" if _setting["cluster"] else SCHEDULER_ENV)


def _client_for(address: str, where: str):
    with _setting_lock:
        client = _env_clients.get(address)
        if client is not None and client.status == "running":
            return client
    try:
        from distributed import Client
    except ImportError as err:
        raise ClusterError(_missing_dask()) from err
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler {address!r} (from {where}): {err}. Start it "
                           f"(`dask scheduler`, then `dask worker {address}` on each machine), or unset "
                           f"{SCHEDULER_ENV} to extract on this machine") from err
    with _setting_lock:
        _env_clients[address] = client
    return client


def _shared_storage_setting():
    with _setting_lock:
        return _setting["shared_storage"]


# ---------------------------------------------------------------------------------------------------
# The hook the session engine calls


def iter_extraction(extractor: CachingExtractor, items: list, batch: int,
                    cancelled: Callable[[], bool] = lambda: False) -> Iterator[tuple[list, list]]:
    """(items, results) pairs covering `items`, batch by batch, as they finish.

    `extractor` is a CachingExtractor (already entered). Locally this is `extractor.extract` on each
    batch in order; on a cluster (see `current_client`) batches finish in any order. When `cancelled()`
    turns true, one empty pair is yielded so the caller can stop; work in flight is dropped when the
    generator is closed.
    """
    batch = max(1, int(batch))
    client = current_client()
    if client is None:
        for start in range(0, len(items), batch):
            if cancelled():
                yield [], []
                return
            chunk = items[start:start + batch]
            yield chunk, extractor.extract(chunk)
        return
    yield from _ClusterRun(client, extractor, items, batch, cancelled).run()


# ---------------------------------------------------------------------------------------------------
# The client side of a run


class _ClusterRun:
    def __init__(self, client, extractor, items, batch, cancelled):
        self.client = client
        self.caching = extractor  # CachingExtractor: .inner, .cache, .hits, .misses
        self.items = items
        self.batch = batch
        self.cancelled = cancelled
        self.mode = _shared_storage_setting()  # "auto", True, False
        self.use_bytes = self.mode is False
        inner = getattr(extractor, "inner", extractor)
        self.spec = _worker_spec(inner)
        self.spec_key = hashlib.sha1(self.spec).hexdigest()
        self.expected_id = inner.id

    def run(self):
        cache = self.caching.cache
        misses = []
        hits_items, hits_values = [], []
        for item in self.items:
            cached = cache.get(item.key, getattr(item, "source", None))
            if cached is None:
                misses.append(item)
                continue
            hits_items.append(item)
            hits_values.append(cached)
            if len(hits_items) >= self.batch:
                self.caching.hits += len(hits_items)
                yield hits_items, hits_values
                hits_items, hits_values = [], []
        if hits_items:
            self.caching.hits += len(hits_items)
            yield hits_items, hits_values
        if not misses:
            return
        # Given keypoints (hand data frames) need no worker: CachingExtractor answers them here.
        local = [i for i in misses if getattr(i, "payload", None) is not None]
        remote = [i for i in misses if getattr(i, "payload", None) is None]
        if local:
            yield local, self.caching.extract(local)
        if remote:
            yield from self._run_remote(remote)

    def _limit(self) -> int:
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001 - a scheduler that does not answer: submit() will say so
            threads = 1
        return max(2, IN_FLIGHT_PER_THREAD * max(1, threads))

    def _submit(self, chunk: list, single: bool = False):
        entries = [self._entry(item) for item in chunk]
        future = self.client.submit(_run_batch, self.spec, self.spec_key, entries, self.expected_id,
                                    pure=False, key=f"createml-widgets-extract-{os.urandom(6).hex()}")
        self.inflight[future] = (chunk, single)

    def _entry(self, item) -> tuple:
        if not self.use_bytes:
            try:
                size = os.stat(item.source).st_size
            except OSError:
                size = -1  # missing here too: the worker reports it as unreadable
            return (item, None, size)
        try:
            data = Path(item.source).read_bytes()
        except OSError as err:
            return (item, UnreadableFileError(item.source, f"cannot be read ({err.strerror or err})"), -1)
        return (item, data, len(data))

    def _run_remote(self, remote: list):
        from distributed.scheduler import KilledWorker

        limit = self._limit()
        # The plan's batch, smaller when there are few items: every worker thread gets some.
        size = max(1, min(self.batch, math.ceil(len(remote) / limit)))
        queue = deque(remote[k:k + size] for k in range(0, len(remote), size))
        singles: deque = deque()  # items of a batch that killed workers, retried one by one
        self.inflight: dict = {}
        try:
            while queue or singles or self.inflight:
                if self.cancelled():
                    yield [], []
                    return
                if len(self.inflight) < limit:
                    limit = self._limit()  # workers may have joined or left
                while (queue or singles) and len(self.inflight) < limit:
                    if singles:
                        self._submit([singles.popleft()], single=True)
                    else:
                        self._submit(queue.popleft())
                # Polled (futures' own state, no default client needed): cancel is seen within POLL_S.
                done = [f for f in self.inflight if f.done()]
                if not done:
                    time.sleep(POLL_S)
                    continue
                for future in done:
                    chunk, single = self.inflight.pop(future)
                    try:
                        answer = future.result()
                        future.release()  # the worker may drop the result now
                    except KilledWorker as err:
                        if single:
                            item = chunk[0]
                            reason = (f"extracting it stopped the Dask worker processes ({err}); it may be a "
                                      "damaged file")
                            values = [UnreadableFileError(item.source, reason)]
                            yield from self._finish(chunk, values)
                        else:
                            log.warning("a batch of %d items keeps killing Dask workers: retrying them one by one",
                                        len(chunk))
                            singles.extend(chunk)
                        continue
                    except Exception as err:  # noqa: BLE001 - scheduler lost, a worker-side bug
                        raise ClusterError(f"feature extraction on the Dask cluster failed: {type(err).__name__}: "
                                           f"{err}. Finished items are in the feature cache: resume to continue"
                                           ) from err
                    worker_id, values = answer
                    if worker_id != self.expected_id:
                        raise ClusterError(
                            f"a Dask worker computes these features as {worker_id!r}, this process as "
                            f"{self.expected_id!r}: install the same createml-widgets, MediaPipe and torch "
                            "versions on the workers")
                    redo = [i for i, v in enumerate(values) if v is _NOT_THERE]
                    if redo:
                        if self.mode is True:
                            for i in redo:
                                values[i] = UnreadableFileError(
                                    chunk[i].source, "a Dask worker cannot read it (shared_storage=True: every "
                                    "worker must see the data at the same path)")
                        else:
                            if not self.use_bytes:
                                log.info("the Dask workers do not see these files: sending their bytes")
                            self.use_bytes = True
                            queue.appendleft([chunk[i] for i in redo])
                    keep = [i for i in range(len(chunk)) if values[i] is not _NOT_THERE]
                    if keep:
                        yield from self._finish([chunk[i] for i in keep], [values[i] for i in keep])
        finally:
            futures = list(self.inflight)
            self.inflight = {}
            if futures:
                with contextlib.suppress(Exception):
                    self.client.cancel(futures)

    def _finish(self, chunk: list, values: list):
        values = [v.to_exception() if isinstance(v, _Error) else v for v in values]
        cache = self.caching.cache
        for item, value in zip(chunk, values):
            if not isinstance(value, BaseException) or getattr(value, "cacheable", False):
                cache.put(item.key, value, getattr(item, "source", None))
        self.caching.misses += len(chunk)
        yield chunk, values


def _worker_spec(inner) -> bytes:
    """The extractor as a worker rebuilds it: settings only, no loaded network, no process pool."""
    spec = copy.copy(inner)
    if hasattr(spec, "workers"):
        spec.workers = 1  # a Dask worker is one process (a daemon: it cannot start a pool); scale with workers
    for attr in ("backbone", "runner", "_runner_for", "_pool", "_detector"):
        if hasattr(spec, attr):
            setattr(spec, attr, None)
    return pickle.dumps(spec)


# ---------------------------------------------------------------------------------------------------
# The worker side


class _NotThere:
    """A worker's answer for a path it cannot see (or sees with another size): send the bytes."""

    def __reduce__(self):
        return (_not_there, ())


def _not_there():
    return _NOT_THERE


_NOT_THERE = _NotThere()

# Per worker process: idle entered extractors by spec key (one per concurrently running thread).
_idle: dict[str, list] = {}
_idle_lock = threading.Lock()


def _take_extractor(spec: bytes, key: str):
    with _idle_lock:
        pool = _idle.setdefault(key, [])
        if pool:
            return pool.pop()
    extractor = pickle.loads(spec)
    extractor.__enter__()
    return extractor


def _give_back(key: str, extractor) -> None:
    with _idle_lock:
        _idle.setdefault(key, []).append(extractor)


def _run_batch(spec: bytes, key: str, entries: list, expected_id: str):
    """Runs on a Dask worker: features of one batch, with the extractor id this worker computes."""
    extractor = _take_extractor(spec, key)
    try:
        worker_id = extractor.id
        if worker_id != expected_id:
            return worker_id, []
        values: list = [None] * len(entries)
        todo, originals = [], []
        tmp = None
        try:
            for i, (item, data, size) in enumerate(entries):
                if isinstance(data, BaseException):
                    values[i] = _Error(data)
                    continue
                if data is None:
                    try:
                        seen = os.stat(item.source).st_size
                    except OSError:
                        seen = None
                    if size >= 0 and seen != size:
                        values[i] = _NOT_THERE
                        continue
                    todo.append(i)
                    originals.append(None)
                    continue
                if tmp is None:
                    tmp = tempfile.mkdtemp(prefix="createml-widgets-batch-")
                local = Path(tmp) / f"{i}{Path(str(item.source)).suffix}"
                local.write_bytes(data)
                originals.append(str(item.source))
                item = copy.copy(item)
                item.source = local
                entries[i] = (item, None, size)
                todo.append(i)
            if todo:
                results = extractor.extract([entries[i][0] for i in todo])
                for i, original, value in zip(todo, originals, results):
                    if isinstance(value, BaseException):
                        value = _Error(value, (str(entries[i][0].source), original) if original else None)
                    values[i] = value
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return worker_id, values
    finally:
        _give_back(key, extractor)


class _Error:
    """An item's exception crossing to the client as itself: same class, same message, same attributes.

    (The package's errors take several arguments, so plain pickling, which calls the class with the
    message alone, cannot rebuild them.) `rename` = (worker's temporary copy, the user's path).
    """

    def __init__(self, exc: BaseException, rename: tuple[str, str] | None = None):
        fix = (lambda v: v) if rename is None else (lambda v: _renamed(v, *rename))
        self.cls = type(exc)
        self.args = tuple(fix(a) for a in exc.args)
        self.state = {k: fix(v) for k, v in vars(exc).items()}
        try:
            pickle.dumps((self.cls, self.args, self.state))
        except Exception:  # noqa: BLE001 - something unpicklable inside: keep its text
            self.cls, self.args, self.state = RuntimeError, (f"{type(exc).__name__}: {fix(str(exc))}",), {}

    def to_exception(self) -> BaseException:
        exc = self.cls.__new__(self.cls)
        exc.args = self.args
        vars(exc).update(self.state)
        return exc


def _renamed(value, local: str, original: str):
    if isinstance(value, str):
        return value.replace(local, original)
    if isinstance(value, Path) and str(value) == local:
        return Path(original)
    return value


def wait_for_workers(client: Client, n: int, timeout: float = 60.0) -> None:
    """Block until `client`'s cluster has `n` workers (a helper for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info().get("workers", {})) < n:
        if time.monotonic() > deadline:
            raise ClusterError(f"the Dask cluster has fewer than {n} workers after {timeout:g} s")
        time.sleep(0.2)


__all__ = ["use_cluster", "current_client", "iter_extraction", "ClusterError", "SCHEDULER_ENV", "wait_for_workers"]
