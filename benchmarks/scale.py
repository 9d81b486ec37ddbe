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
"""
from __future__ import annotations

import logging
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

    sizes = [1000] if ctx.quick else [1000, 10_000] + ([100_000] if ctx.large else [])
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
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            for mode, costs in per_item.items():
                ctx.add("scale", f"{mode}: per-photo cost at {hi:,} / at {lo:,}", round(costs[hi] / costs[lo], 2), "x",
                        note="1.0 = linear")
    finally:
        client.close()
        cluster.close()

