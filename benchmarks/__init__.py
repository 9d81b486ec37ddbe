"""Benchmarks for createml_widgets: `python -m benchmarks [--quick] [--only image,training,...]`.

Each area is one module with `run(ctx) -> None` that adds rows to `ctx` (see `Context.add`).
Shared helpers live here: timing with interleaved repeats and medians, a private feature cache,
synthetic data sets made from the bundled photos, and peak memory of a subprocess.

Timing on a shared 2-core machine is noisy (other processes take whole cores for seconds), so
every comparison runs its candidates interleaved, round after round, in one process, and reports
medians; ratios are computed per round and their median reported too.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "createml_widgets" / "samples"
DIGITS = SAMPLES / "sign-language-digits"


@dataclass
class Row:
    area: str
    name: str
    value: float | str
    unit: str = ""
    note: str = ""
    target: str = ""  # e.g. ">= 1.8x: met"


@dataclass
class Context:
    """What a benchmark module gets: options, a scratch directory, and the result table."""

    quick: bool = False
    large: bool = False  # also the slowest sizes (10,000 hand-action clips)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cmlw-bench-")))
    rows: list[Row] = field(default_factory=list)
    verbose: bool = True
    _shared: dict = field(default_factory=dict)

    def add(self, area: str, name: str, value, unit: str = "", note: str = "", target: str = "") -> Row:
        row = Row(area, name, value, unit, note, target)
        self.rows.append(row)
        if self.verbose:
            print(f"  [{area}] {name}: {fmt(value)} {unit}  {target}  {note}".rstrip(), file=sys.stderr, flush=True)
        return row

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"  {message}", file=sys.stderr, flush=True)

    def shared(self, key: str, make: Callable):
        """A value computed once per run and shared between modules (e.g. a synthetic data set)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


def fmt(value) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value)


def target_text(ok: bool, wanted: str) -> str:
    return f"{wanted}: {'met' if ok else 'NOT met'}"


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, warmup: bool = True
                ) -> dict[str, list[float]]:
    """Seconds per call of each candidate, run round-robin `rounds` times (order rotated each round)."""
    names = list(candidates)
    if warmup:
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(candidates[name])[0])
    return times


def median(values) -> float:
    return float(statistics.median(values))


def ratio_median(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow[i] / fast[i] (pairs measured next to each other)."""
    return median([s / f for s, f in zip(slow, fast)])


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


# ---------------------------------------------------------------------------------------------
# Private caches and synthetic data
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def private_cache(root: Path | None = None):
    """Point CREATEML_WIDGETS_CACHE at `root` (default: a fresh temp dir) for the block."""
    made = root is None
    root = Path(tempfile.mkdtemp(prefix="cmlw-bench-cache-")) if root is None else Path(root)
    old = os.environ.get("CREATEML_WIDGETS_CACHE")
    os.environ["CREATEML_WIDGETS_CACHE"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("CREATEML_WIDGETS_CACHE", None)
        else:
            os.environ["CREATEML_WIDGETS_CACHE"] = old
        if made:
            shutil.rmtree(root, ignore_errors=True)


def sample_photos() -> dict[str, list[Path]]:
    """{label: [photo, ...]} of the bundled sign-language digits (200 photos, 100x100)."""
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for d in sorted(DIGITS.iterdir()) if d.is_dir()}


def synthetic_images(dest: Path, count: int, seed: int = 0, size: int | None = None) -> Path:
    """`count` JPEGs in label folders under `dest`, copies of the sample photos with +-2 pixel noise.

    Every file differs in content (so its feature-cache key differs) while looking like the photo
    it was made from. `size` resizes (e.g. 1024 for "phone-sized" inputs); default keeps 100x100.
    """
    import numpy as np
    from PIL import Image

    photos = sample_photos()
    labels = sorted(photos)
    rng = np.random.default_rng(seed)
    dest = Path(dest)
    for label in labels:
        (dest / label).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = labels[i % len(labels)]
        src = photos[label][(i // len(labels)) % len(photos[label])]
        img = Image.open(src).convert("RGB")
        if size:
            img = img.resize((size, size), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16)
        noise = rng.integers(-2, 3, size=arr.shape, dtype=np.int16)
        out = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
        out.save(dest / label / f"syn{i:05d}.jpg", quality=92)
    return dest


# ---------------------------------------------------------------------------------------------
# Subprocesses: wall time and peak memory
# ---------------------------------------------------------------------------------------------
CHILD_PRELUDE = """
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
_t0 = time.perf_counter()
def _peak_rss():
    # VmHWM: this process image's own high-water mark. (ru_maxrss would also count the parent's
    # pages from the fork that started this interpreter: a 1 GB parent makes every child "1 GB".)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
def _report(**extra):
    rss = _peak_rss()
    print("@@RESULT@@" + json.dumps(dict(extra, peak_rss=rss, wall=time.perf_counter() - _t0)), flush=True)
"""


@dataclass
class ChildResult:
    wall: float  # seconds, whole subprocess (incl. interpreter start and imports)
    peak_rss: int  # bytes: the child's own peak (VmHWM; ru_maxrss where /proc is missing)
    peak_tree_rss: int  # bytes: max over psutil polls of the child's + its children's RSS
    data: dict


def run_child(code: str, env: dict | None = None, timeout: float = 900, poll: float = 0.02,
              repo: Path | None = None) -> ChildResult:
    """Run Python `code` (which should call `_report(**numbers)` at the end) in a fresh interpreter.

    Peak memory comes two ways: the child's own high-water mark (VmHWM, exact), and polling the RSS
    of its process tree with psutil every `poll` s (sees worker processes too, may miss short peaks).
    `repo`: the checkout whose package the child imports (default this one; another, to measure a "before").
    """
    import psutil

    full_env = dict(os.environ)
    full_env.update(env or {})
    repo = Path(repo) if repo is not None else REPO
    full_env["PYTHONPATH"] = str(repo) + os.pathsep + full_env.get("PYTHONPATH", "")
    script = CHILD_PRELUDE.format(repo=str(repo)) + code
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=full_env, text=True)
    peak = 0
    ps = psutil.Process(proc.pid)
    try:
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            if time.perf_counter() - t > timeout:
                proc.kill()
                raise TimeoutError(f"benchmark child ran over {timeout:.0f}s")
            time.sleep(poll)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.perf_counter() - t
    lines = [ln for ln in out.splitlines() if ln.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed (rc {proc.returncode}):\n{err[-3000:]}")
    data = json.loads(lines[-1][len("@@RESULT@@"):])
    return ChildResult(wall, int(data.pop("peak_rss")), max(peak, 0), data)


def mib(nbytes: float) -> float:
    return nbytes / (1 << 20)
