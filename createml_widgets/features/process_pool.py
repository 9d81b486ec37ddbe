"""`parallel_map`: a list mapped across worker processes, in order, the calling process taking part.

This package's pool for MediaPipe work (photos' and videos' hand keypoints), general in what it runs:
`fn(state, item)` for each item, with a per-process `state` (a detector) built once in each worker.

* Workers start with the "forkserver" method (a server process forked once, every worker forked from
  it; default) or "spawn" — never by forking the caller, which may hold torch's threads.
* Workers never import or re-run the caller's __main__, and end when the caller dies (even by kill -9).
* A worker boots without importing the whole package (torch): only the modules its work needs.
* An item whose call raises holds its exception; a crashed pool is not fatal (the rest is done here).
* `resolve_workers`: the argument, else $CREATEML_WIDGETS_WORKERS, else the CPU count.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import pickle
import sys
import types
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..errors import NoHandDetectedError, UnreadableFileError


class _Failure:
    """An exception crossing the process boundary (UnreadableFileError does not pickle by itself)."""

    def __init__(self, exc: BaseException):
        if isinstance(exc, UnreadableFileError):
            self.kind, self.payload = "unreadable", (str(exc.path) if exc.path else None, exc.reason)
        elif isinstance(exc, NoHandDetectedError):
            self.kind, self.payload = "nohand", (str(exc.source), "")
        else:
            try:
                pickle.loads(pickle.dumps(exc))
                self.kind, self.payload = "pickled", exc
            except Exception:  # noqa: BLE001
                self.kind, self.payload = "text", f"{type(exc).__name__}: {exc}"

    def to_exception(self) -> Exception:
        if self.kind == "unreadable":
            return UnreadableFileError(*self.payload)
        if self.kind == "nohand":
            return NoHandDetectedError(self.payload[0])
        if self.kind == "pickled":
            return self.payload
        return RuntimeError(self.payload)


# Per-process state of a worker: the detector built by the initializer.
_WORKER_STATE = None


# Per-process state of a worker: what the initializer built.
_WORKER_STATE = None


def _exit_with_parent() -> None:
    """End this worker as soon as the process that started the pool is gone (even by kill -9).

    multiprocessing gives every worker a sentinel of its parent: the read end of a pipe whose only
    write end the parent holds, so it reads as closed the moment the parent dies. A daemon thread waits
    on it. Without this a worker stays blocked on its task queue forever (it holds that queue's write
    end itself), and with it the resource tracker, whose pipe every worker inherits.
    """
    import multiprocessing
    import threading
    from multiprocessing.connection import wait as wait_for

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch():
        with contextlib.suppress(Exception):
            wait_for([sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="cmlw-parent-watch", daemon=True).start()
    if sys.platform.startswith("linux"):  # and the kernel's own signal if the forking parent dies first
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before the call
                os._exit(3)


def _worker_init(make_state, setup=None):
    global _WORKER_STATE
    _exit_with_parent()
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)
    if setup is not None:
        setup()
    _WORKER_STATE = make_state()


# Run in each new worker before anything of this package is unpickled. `import createml_widgets` loads
# the whole package (torch included, ~2 s); a worker only needs this module, the one of its function and
# state (e.g. hand_detector: errors, image loading), so the package and its `features` subpackage are registered as bare namespace modules
# (their __init__ files are skipped) unless something imported them already.
_WORKER_BOOT = """
import pickle, sys, types
for name, path in PACKAGES:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [path]
        module.__package__ = name
        sys.modules[name] = module
from createml_widgets.features import process_pool
process_pool._worker_init(*pickle.loads(STATE))
"""


def _worker_boot_args(make_state, setup=None) -> tuple:
    features_dir = Path(__file__).resolve().parent
    packages = [("createml_widgets", str(features_dir.parent)), ("createml_widgets.features", str(features_dir))]
    if __name__ != "createml_widgets.features.process_pool":  # imported under another name: no stubs
        packages = []
    return (_WORKER_BOOT, {"PACKAGES": packages, "STATE": pickle.dumps((make_state, setup)),
                           "__name__": "__cmlw_worker__"})


def _worker_chunk(fn, chunk):
    return [_call(fn, _WORKER_STATE, item) for item in chunk]


def _call(fn, state, item):
    try:
        return fn(state, item)
    except Exception as exc:  # noqa: BLE001 - a bad input fills its slot, it does not stop the job
        return _Failure(exc)


def _unwrap(value):
    return value.to_exception() if isinstance(value, _Failure) else value


WORKERS_ENV = "CREATEML_WIDGETS_WORKERS"


def resolve_workers(workers: int | None) -> int:
    """`workers`, else $CREATEML_WIDGETS_WORKERS, else os.cpu_count().

    The variable matters where the CPU count is the host's, not the session's: a container given
    1-2 CPUs of a big machine (Binder) would otherwise start one MediaPipe process per host CPU.
    """
    if workers is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        if not env:
            return max(1, os.cpu_count() or 1)
        try:
            workers = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}") from None
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be None or a positive integer, got {workers}")
    return workers


def parallel_map(fn: Callable[[Any, Any], object], items: list, make_state: Callable[[], object], *,
                 workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                 picklable: Callable[[Any], bool] | None = None, min_parallel: int = 2, chunk_size: int | None = None,
                 mp_context: str | None = None, worker_setup: Callable[[], None] | None = None) -> list:
    """[fn(state, item) for item in items] across processes, in order; exceptions fill their slots.

    `fn` must be a module-level function and `make_state` a picklable callable (e.g. a functools.partial
    of a class) building the per-process state (a detector). The calling process takes part: it works
    through chunks from the end of the list while the workers take them from the front, so the
    workers' start-up (importing MediaPipe, about 0.5 s) delays nothing. Items for which `picklable`
    says False (in-memory images) are done in this process. A crashed worker pool is not fatal: what
    it had not finished is done here. `worker_setup` (a picklable, module-level function) runs in each
    worker before `make_state` (e.g. `hand_detector.prepare_worker`).
    """
    n = len(items)
    results: list = [None] * n
    done = 0
    workers = resolve_workers(workers)

    def report(count):
        nonlocal done
        done += count
        if progress is not None:
            progress(done, n)

    local_state = None

    def run_local(indices):
        nonlocal local_state
        if local_state is None:
            local_state = make_state()
        for i in indices:
            results[i] = _unwrap(_call(fn, local_state, items[i]))
        report(len(indices))

    remote = [i for i in range(n) if picklable is None or picklable(items[i])]
    local_only = [i for i in range(n) if not (picklable is None or picklable(items[i]))]
    try:
        if workers <= 1 or len(remote) < max(2, min_parallel):
            for i in range(n):
                run_local([i])
            return results
        children = workers - 1
        size = chunk_size or max(1, min(8, math.ceil(len(remote) / (workers * 12))))
        chunks = deque(remote[k:k + size] for k in range(0, len(remote), size))
        if local_only:
            chunks.append(local_only)  # taken first by this process (it works from the end)
        executor = ProcessPoolExecutor(
            max_workers=children,
            mp_context=_get_context(mp_context),
            initializer=exec,
            initargs=_worker_boot_args(make_state, worker_setup),
        )
        inflight: dict = {}
        broken = False
        clean = False
        try:
            def top_up():
                nonlocal broken
                # One chunk always stays for this process (it takes them from the end): with few chunks
                # (a long video in two parts) the workers would otherwise be handed all of them.
                while not broken and len(chunks) > 1 and len(inflight) < 2 * children and chunks[0] is not local_only:
                    chunk = chunks.popleft()
                    try:
                        future = executor.submit(_worker_chunk, fn, [items[i] for i in chunk])
                    except Exception:  # noqa: BLE001 - no workers (pool broken, fork server down): go on here
                        chunks.appendleft(chunk)
                        broken = True
                        return
                    inflight[future] = chunk

            def harvest(block: bool):
                nonlocal broken
                if not inflight:
                    return
                finished, _ = wait(list(inflight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
                for future in finished:
                    chunk = inflight.pop(future)
                    try:
                        values = future.result()
                    except BrokenProcessPool:  # a worker died: finish everything here
                        broken = True
                        chunks.append(chunk)
                        continue
                    except Exception:  # noqa: BLE001 - e.g. a result that does not unpickle: redo it here
                        chunks.append(chunk)
                        continue
                    for i, value in zip(chunk, values):
                        results[i] = _unwrap(value)
                    report(len(chunk))

            top_up()
            while chunks or inflight:
                if chunks:
                    run_local(chunks.pop())
                    harvest(block=False)
                    top_up()
                else:
                    harvest(block=True)
            clean = True
        finally:
            executor.shutdown(wait=clean, cancel_futures=True)
        return results
    finally:
        if local_state is not None and hasattr(local_state, "close"):
            local_state.close()


# Modules the fork server imports once, so that each worker forked from it starts in ~0.1 s. Never
# "__main__": the fork server would run the caller's script (its top-level code, training included).
FORKSERVER_PRELOAD = ["numpy", "PIL.Image", "cv2", "mediapipe.python.solutions.hands"]
# Names of this package's worker processes: their start-up never imports or runs the caller's main module.
WORKER_PROCESS_PREFIX = "cmlw-worker-"


def _without_main(get_preparation_data):
    """multiprocessing.spawn.get_preparation_data, leaving out the caller's main module for our workers.

    multiprocessing makes every spawned or fork-server worker re-run the main script (or `-m` module)
    under the name __mp_main__, which re-runs a plain script's top-level code (a script without an
    `if __name__ == "__main__":` guard trained its model again in each worker). Our workers need
    nothing from it: the functions and detectors they receive live in this package. Other processes
    (the caller's own pools) get the data unchanged.
    """
    if getattr(get_preparation_data, "_cmlw_without_main", False):
        return get_preparation_data

    def wrapped(name, *args, **kwargs):
        data = get_preparation_data(name, *args, **kwargs)
        if str(name).startswith(WORKER_PROCESS_PREFIX):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    wrapped._cmlw_without_main = True
    wrapped.__wrapped__ = get_preparation_data
    return wrapped


class _WorkerContext:
    """A multiprocessing context (fork server or spawn) whose processes are named as this package's
    workers, so that `_without_main` knows them. Everything else is the wrapped context's."""

    _numbers = itertools.count(1)

    def __init__(self, ctx):
        from multiprocessing import spawn

        spawn.get_preparation_data = _without_main(spawn.get_preparation_data)
        self._ctx = ctx

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
        kwargs["name"] = f"{WORKER_PROCESS_PREFIX}{next(self._numbers)}"
        return self._ctx.Process(*args, **kwargs)


def _main_module_imports() -> list[str]:
    """Modules of this package that the caller's main script imported, for the fork server to preload.

    The workers never run the main script (see `_without_main`), but a script that imported this
    package (and so torch, ~2 s) is usually about to use more of it: loading those modules once in the
    fork server costs each worker nothing. An interactive session's main names none.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return []
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    reimported = (spec_name is not None and not spec_name.endswith("__main__")) or (
        spec_name is None and getattr(main, "__file__", None))
    if not reimported:
        return []
    names = set()
    for value in list(vars(main).values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        # Only this package (which pulls in torch): anything else a script imports is its own business,
        # and a module failing to import would stop the fork server.
        if isinstance(name, str) and name.split(".")[0] == "createml_widgets" and name in sys.modules:
            names.add(name)
    return sorted(names)


def _get_context(name: str | None = None):
    """The multiprocessing context for workers: "forkserver" (default) or "spawn".

    Neither forks the calling process (which may hold torch's threads). With "forkserver" a server
    process is started once per session (importing MediaPipe once) and every worker is forked from it;
    with "spawn" each worker imports everything itself (~0.5-2.5 s). In both, workers never import or
    run the caller's main module, and end when the caller dies. CREATEML_WIDGETS_MP_CONTEXT overrides
    the default.
    """
    import multiprocessing

    name = name or os.environ.get("CREATEML_WIDGETS_MP_CONTEXT") or "forkserver"
    if name not in multiprocessing.get_all_start_methods() or name == "fork":
        name = "spawn"
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        from multiprocessing import forkserver

        current = [m for m in getattr(forkserver._forkserver, "_preload_modules", None) or [] if m != "__main__"]
        extra = FORKSERVER_PRELOAD + _main_module_imports()
        wanted = current + [m for m in dict.fromkeys(extra) if m not in current]
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(wanted)
    return _WorkerContext(ctx)


_resolve_workers = resolve_workers  # the older, private name
