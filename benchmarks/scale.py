"""Scale: image-classifier extraction here and on a 2-worker Dask LocalCluster, cached re-runs, training.

At 1,000 and 10,000 photos (100,000 with --large; --quick: 1,000 only), synthetic copies of the sample
photos (+-2 noise, every file a distinct cache key). Each run is a fresh interpreter (`run_child`):

* local: `MLImageClassifier.train` with an empty feature cache (the default local extraction);
* dask: the same on a `LocalCluster(n_workers=2, threads_per_worker=1)` started here, named to the child
  by CREATEML_WIDGETS_SCHEDULER (the workers' own peak memory is read from them after the run);
* cached: the same command again on the dask run's cache (nothing left to extract).

Reported: extraction time and items/s, training time (10 L-BFGS iterations, the default classifier),
peak RSS of the caller's process tree and of each worker, and the growth of the per-item cost from the
smallest to the largest size (1.0 = linear).

`--quick` measures extraction on a 2,000-photo sample (local and dask), and what 10,000 and 100,000
photos stress beyond extraction — the cache read, the session's feature store and training — on the
real files with their cache entries made up (`cached training` rows: synthetic 1,280-float features, a
class mean plus noise, stored under each file's real cache key, so the run extracts nothing). Those
rows report the run's peak RSS and its peak anonymous memory (RssAnon, sampled every 50 ms: the
process's own memory, where mapped features and the page cache do not count).
"""
from __future__ import annotations

import logging
import os
import shutil

from . import Context, mib, private_cache, run_child, synthetic_images

CHILD = """
from createml_widgets import MLImageClassifier
from createml_widgets.session import MLJob
data = MLImageClassifier.DataSource.labeled_directories({root!r})
marks = {{}}
t = time.perf_counter()
job = MLJob(MLImageClassifier.make_training_session(data, MLImageClassifier.ModelParameters(max_iterations=10)))
job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
model = job._start().result()
end = time.perf_counter()
ext = marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end))
train = marks.get("evaluating", end) - marks.get("training", end)
_report(run=end - t, extraction=ext, training=train, summary=job.session.summary["extraction"],
        val_acc=model.validation_metrics.accuracy)
"""

CACHED_CHILD = """
import threading
from createml_widgets import MLImageClassifier
from createml_widgets.session import MLJob, MLTrainingSessionParameters
_anon = [0]
def _sample():
    while True:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    _anon[0] = max(_anon[0], int(line.split()[1]) * 1024)
        time.sleep(0.05)
threading.Thread(target=_sample, daemon=True).start()
data = MLImageClassifier.DataSource.labeled_directories({root!r})
marks = {{}}
t = time.perf_counter()
session = MLImageClassifier.make_training_session(data, MLImageClassifier.ModelParameters(max_iterations=10),
                                                  MLTrainingSessionParameters(session_directory={session!r}))
job = MLJob(session)
job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
model = job._start().result()
end = time.perf_counter()
read = marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end))
train = marks.get("evaluating", end) - marks.get("training", end)
_report(run=end - t, read=read, training=train, summary=job.session.summary["extraction"],
        train_n=job.session.summary["training_examples"], val_n=job.session.summary["validation_examples"],
        val_acc=model.validation_metrics.accuracy, peak_anon=_anon[0])
"""


def fill_cache(root, cache, seed: int = 0) -> int:
    """Cache entries for every photo under `root`, under its real key: class mean + noise (1,280 floats)."""
    import numpy as np

    from createml_widgets.data.items import Item, scan_labeled_directories
    from createml_widgets.features.cache import FeatureCache
    from createml_widgets.features.image_embedding import ImageEmbeddingExtractor
    from createml_widgets.features.image_io import is_image_file
    from createml_widgets.tasks.image_algorithm import FeatureExtractorType

    ext_id = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1)).id
    labeled, _ = scan_labeled_directories(root, is_image_file, "an image")
    rng = np.random.default_rng(seed)
    means = {label: rng.standard_normal(1280).astype(np.float32) for label in labeled}
    store = FeatureCache(cache)
    n = 0
    for label, paths in labeled.items():
        for p in paths:
            row = means[label] + 3 * rng.standard_normal(1280).astype(np.float32)
            store.put(Item(p, label).resolve_key(ext_id).key, row)
            n += 1
    return n


def cached_training(ctx: Context, n: int, repo=None) -> dict:
    """Train on `n` photos whose features are all in the cache (made up): the read, the store, training."""
    root = ctx.scratch / f"cached-{n}"
    if not root.exists():
        synthetic_images(root, n, seed=n)
    cache = ctx.scratch / f"cached-cache-{n}"
    if not cache.exists():
        fill_cache(root, cache)
    session = ctx.scratch / f"cached-session-{n}"
    shutil.rmtree(session, ignore_errors=True)
    r = run_child(CACHED_CHILD.format(root=str(root), session=str(session)),
                  env={"CREATEML_WIDGETS_CACHE": str(cache)}, timeout=7200, repo=repo)
    shutil.rmtree(session, ignore_errors=True)
    d = r.data
    assert d["summary"]["extracted"] == 0, d["summary"]
    return {**d, "peak_rss": r.peak_rss}


def _worker_peaks(client) -> list[float]:
    def peak():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    return sorted(mib(v) for v in client.run(peak).values())


def run(ctx: Context) -> None:
    from distributed import Client, LocalCluster

    sizes = [2000] if ctx.quick else [1000, 10_000] + ([100_000] if ctx.large else [])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    per_item: dict[str, dict[int, float]] = {"local": {}, "dask": {}, "training": {}}
    try:
        for n in sizes:
            root = synthetic_images(ctx.scratch / f"scale-{n}", n, seed=n)
            for mode in ("local", "dask"):
                with private_cache(ctx.scratch / f"cache-{mode}-{n}") as cache:
                    env = {"CREATEML_WIDGETS_CACHE": str(cache)}
                    if mode == "dask":
                        env["CREATEML_WIDGETS_SCHEDULER"] = cluster.scheduler_address
                    first = run_child(CHILD.format(root=str(root)), env=env, timeout=7200)
                    d = first.data
                    rate = n / d["extraction"]
                    per_item[mode][n] = d["extraction"] / n
                    note = f"peak RSS {mib(first.peak_tree_rss):.0f} MiB (caller's process tree)"
                    if mode == "dask":
                        note += ", workers " + " / ".join(f"{w:.0f}" for w in _worker_peaks(client)) + " MiB"
                    ctx.add("scale", f"{n:,} photos, {mode}: extraction", round(d["extraction"], 1), "s",
                            note=f"{rate:.0f} photos/s; {note}")
                    ctx.add("scale", f"{n:,} photos, {mode}: training (10 iterations)", round(d["training"], 2), "s",
                            note=f"whole run {d['run']:.1f} s, validation accuracy {d['val_acc']:.2f}")
                    per_item["training"].setdefault(n, d["training"] / n)
                    if mode == "dask":
                        again = run_child(CHILD.format(root=str(root)), env=env, timeout=7200)
                        a = again.data
                        assert a["summary"]["extracted"] == 0, a["summary"]
                        ctx.add("scale", f"{n:,} photos, cached re-run: extraction", round(a["extraction"], 2), "s",
                                note=f"{a['extraction'] / d['extraction'] * 100:.1f} % of the first run's; whole run "
                                     f"{a['run']:.1f} s; peak RSS {mib(again.peak_tree_rss):.0f} MiB")
            shutil.rmtree(root, ignore_errors=True)
            for mode in ("local", "dask"):
                shutil.rmtree(ctx.scratch / f"cache-{mode}-{n}", ignore_errors=True)
        cached = [10_000, 100_000] if ctx.quick or ctx.large else [10_000]
        # CMLW_BENCH_BEFORE_REPO: another checkout (e.g. `git archive <commit>` unpacked) measured alike, as "before"
        before = os.environ.get("CMLW_BENCH_BEFORE_REPO")
        for n in cached:
            for label, repo in [("", None)] + ([(" (before)", before)] if before else []):
                d = cached_training(ctx, n, repo)
                matrix = (d["train_n"] + d["val_n"]) * 1280 * 4  # the training and validation matrices
                what = f"{n:,} photos, cached training{label}"
                ctx.add("scale", f"{what}: cache read + store", round(d["read"], 1), "s",
                        note=f"{n / d['read']:.0f} photos/s; whole run {d['run']:.1f} s")
                ctx.add("scale", f"{what}: 10 iterations", round(d["training"], 2), "s",
                        note=f"validation accuracy {d['val_acc']:.2f}")
                ctx.add("scale", f"{what}: peak anonymous memory", round(mib(d["peak_anon"])), "MiB",
                        note=f"peak RSS {mib(d['peak_rss']):.0f} MiB (with mapped features); training + validation "
                             f"matrices {mib(matrix):.0f} MiB")
            shutil.rmtree(ctx.scratch / f"cached-{n}", ignore_errors=True)
            shutil.rmtree(ctx.scratch / f"cached-cache-{n}", ignore_errors=True)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            for mode, costs in per_item.items():
                ctx.add("scale", f"{mode}: per-photo cost at {hi:,} / at {lo:,}", round(costs[hi] / costs[lo], 2), "x",
                        note="1.0 = linear")
    finally:
        client.close()
        cluster.close()

