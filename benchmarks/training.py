"""MLImageClassifier end to end: first run vs cached re-run, iterations/s, latency, memory, scaling.

* first run (empty feature cache: extraction + training) vs a second run on the same data with other
  classifier parameters (cache warm), on the bundled 200 photos, in this process; target >= 20x.
* prediction latency of one image (warm, and the first call that builds the backbone).
* subprocesses (fresh interpreter each; peak RSS from ru_maxrss and psutil polling) at 100 and 1,000
  synthetic photos (copies of the sample with +-2 noise): first run and cached run; target: peak RSS
  < 2 GB at 1,000. At 10,000 items only the cached run is measured, on 10,000 synthetic files whose
  feature-cache entries were pre-filled with the real photo's features plus noise (extracting 10,000
  images would take ~3-10 minutes here); its first-run time is extrapolated from the 1,000-image rate.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import (
    DIGITS,
    Context,
    median,
    mib,
    private_cache,
    run_child,
    synthetic_images,
    target_text,
)

CHILD_TRAIN = """
from createml_widgets import MLImageClassifier
from createml_widgets.session import MLJob
root = {root!r}
P = MLImageClassifier.ModelParameters
params = P(max_iterations={iterations}) if {mlp!r} is None else P(max_iterations={iterations},
    algorithm=MLImageClassifier.ModelAlgorithmType(classifier=MLImageClassifier.ClassifierType.multilayer_perceptron({mlp!r})))
data = MLImageClassifier.DataSource.labeled_directories(root)
marks = {{}}
t = time.perf_counter()
job = MLJob(MLImageClassifier.make_training_session(data, params))
job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
model = job._start().result()
end = time.perf_counter()
ext = marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end))
train = marks.get("evaluating", end) - marks.get("training", end)
_report(run=end - t, extraction=ext, training=train, val_acc=model.validation_metrics.accuracy,
        train_count=model.training_metrics.count)
"""


def _params(P, iterations: int = 25, mlp=None):
    from createml_widgets import MLImageClassifier

    if mlp is None:
        return P(max_iterations=iterations)
    return P(max_iterations=iterations, algorithm=MLImageClassifier.ModelAlgorithmType(
        classifier=MLImageClassifier.ClassifierType.multilayer_perceptron(mlp)))


def _train(data, params):
    """Run one training job; returns (seconds, model, {phase: seconds spent})."""
    from createml_widgets import MLImageClassifier
    from createml_widgets.session import MLJob

    marks: dict[str, float] = {}
    t = time.perf_counter()
    job = MLJob(MLImageClassifier.make_training_session(data, params))  # callbacks before it starts
    job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
    model = job._start().result()
    end = time.perf_counter()
    phases = {"extraction": marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end)),
              "training": marks.get("evaluating", end) - marks.get("training", end)}
    return end - t, model, phases


def first_vs_cached(ctx: Context) -> None:
    from createml_widgets import MLImageClassifier

    P = MLImageClassifier.ModelParameters
    data = MLImageClassifier.DataSource.labeled_directories(DIGITS)
    rounds = 1 if ctx.quick else 3
    firsts, cached_lr, cached_mlp, train_lr, eager_firsts = [], [], [], [], []
    model = None
    for _ in range(rounds):
        with private_cache():  # empty feature cache (and no cached ONNX file): a true first run
            t1, model, ph = _train(data, P())
            firsts.append(t1)
            train_lr.append(ph["training"])
            cached_lr.append(_train(data, _params(P, iterations=20))[0])
            cached_mlp.append(_train(data, _params(P, mlp=[64]))[0])
        if not ctx.quick:
            with private_cache():
                os.environ["CREATEML_WIDGETS_INFERENCE_BACKEND"] = "eager"
                try:
                    eager_firsts.append(_train(data, P())[0])
                finally:
                    os.environ.pop("CREATEML_WIDGETS_INFERENCE_BACKEND", None)
    f = median(firsts)
    ctx.add("training", "image: first run, 200 photos (extract + train, default params)", f, "s",
            f"median of {rounds}; training phase {median(train_lr):.2f} s")
    for label, ts in (("logistic, 20 iterations", cached_lr), ("MLP [64], 25 iterations", cached_mlp)):
        r = median([a / b for a, b in zip(firsts, ts)])
        ctx.add("training", f"image: cached re-run, {label}", median(ts), "s", f"{r:.1f}x faster than the first run",
                target_text(r >= 20, ">= 20x"))
    if eager_firsts:
        fe = median(eager_firsts)
        ctx.add("training", "image: first run with the eager backend (before)", fe, "s",
                f"re-run speed-up would be {fe / median(cached_lr):.0f}x / {fe / median(cached_mlp):.0f}x")
    latency(ctx, model)


def latency(ctx: Context, model) -> None:
    photo = sorted((DIGITS / "3").glob("*.JPG"))[0]
    model._prediction_extractor = None
    t, _ = _timed(model.prediction, photo)
    ctx.add("training", "image: prediction, first call (builds the backbone runner)", t * 1e3, "ms")
    warm = [_timed(model.prediction, photo)[0] for _ in range(15)]
    ctx.add("training", "image: prediction latency, one photo (warm)", median(warm) * 1e3, "ms",
            f"backend {model._prediction_extractor.runner.backend}")
    os.environ["CREATEML_WIDGETS_INFERENCE_BACKEND"] = "eager"
    try:
        model._prediction_extractor = None
        model.prediction(photo)
        warm_e = [_timed(model.prediction, photo)[0] for _ in range(15)]
    finally:
        os.environ.pop("CREATEML_WIDGETS_INFERENCE_BACKEND", None)
        model._prediction_extractor = None
    ctx.add("training", "image: prediction latency, one photo, eager backend (before)", median(warm_e) * 1e3, "ms")


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _child(ctx: Context, root: Path, cache: Path, iterations: int = 25, mlp=None):
    code = CHILD_TRAIN.format(root=str(root), iterations=iterations, mlp=mlp)
    return run_child(code, env={"CREATEML_WIDGETS_CACHE": str(cache)})


def scaling(ctx: Context) -> None:
    sizes = [100, 1000]
    rates = {}
    for n in sizes:
        root = ctx.shared(f"synthetic-{n}", lambda n=n: synthetic_images(ctx.scratch / f"syn{n}", n, seed=n))
        cache = ctx.scratch / f"cache-{n}"
        first = _child(ctx, root, cache)
        again = _child(ctx, root, cache, iterations=20)
        rates[n] = first.data["extraction"] / n
        tgt = target_text(first.peak_rss < 2e9, "< 2 GB") if n == 1000 else ""
        ctx.add("training", f"image {n:>6,}: first run (subprocess)", first.data["run"], "s",
                f"extraction {first.data['extraction']:.1f} s ({n / first.data['extraction']:.0f} img/s), "
                f"training {first.data['training']:.2f} s ({25 / first.data['training']:.0f} it/s); "
                f"process {first.wall:.1f} s incl. start-up")
        ctx.add("training", f"image {n:>6,}: first run peak RSS", mib(first.peak_rss), "MiB",
                f"psutil tree peak {mib(first.peak_tree_rss):.0f} MiB", tgt)
        ctx.add("training", f"image {n:>6,}: cached re-run (subprocess)", again.data["run"], "s",
                f"{first.data['run'] / again.data['run']:.1f}x faster; training {again.data['training']:.2f} s "
                f"({20 / again.data['training']:.0f} it/s); peak RSS {mib(again.peak_rss):.0f} MiB")
    n = 10_000
    root, cache = _prefilled(ctx, n)
    again = _child(ctx, root, cache, iterations=20)
    ext_est = rates[1000] * n
    ctx.add("training", f"image {n:>6,}: cached run (subprocess, pre-filled cache)", again.data["run"], "s",
            f"training {again.data['training']:.2f} s ({20 / again.data['training']:.1f} it/s); first run "
            f"would add ~{ext_est:.0f} s of extraction (1,000-image rate)")
    ctx.add("training", f"image {n:>6,}: cached run peak RSS", mib(again.peak_rss), "MiB",
            f"psutil tree peak {mib(again.peak_tree_rss):.0f} MiB")


def _prefilled(ctx: Context, n: int) -> tuple[Path, Path]:
    """n synthetic photos whose feature-cache entries hold their source photo's features + small noise."""
    from createml_widgets.data.items import Item
    from createml_widgets.features.cache import FeatureCache
    from createml_widgets.features.image_embedding import ImageEmbeddingExtractor
    from createml_widgets.tasks.image_classifier import FeatureExtractorType

    t = time.perf_counter()
    root = synthetic_images(ctx.scratch / f"syn{n}", n, seed=n)
    fe = FeatureExtractorType.scene_print(1)  # Create ML's default revision, as the default parameters use
    ext = ImageEmbeddingExtractor(fe)
    sources = sorted(DIGITS.glob("*/*.JPG"))
    with ext:
        base = dict(zip([(p.parent.name, p.name) for p in sources],
                        np.stack(ext.extract([Item(p, p.parent.name) for p in sources]))))
    by_label: dict[str, list[np.ndarray]] = {}
    for (label, _), v in sorted(base.items()):
        by_label.setdefault(label, []).append(v)
    cache_dir = ctx.scratch / f"cache-{n}"
    cache = FeatureCache(cache_dir)
    rng = np.random.default_rng(n)
    labels = sorted(by_label)
    for i in range(n):
        label = labels[i % len(labels)]
        path = root / label / f"syn{i:05d}.jpg"
        src = by_label[label][(i // len(labels)) % len(by_label[label])]
        vec = (src * (1 + 0.02 * rng.standard_normal(src.shape))).astype(np.float32)
        cache.put(Item(path, label).resolve_key(ext.id).key, vec)
    ctx.log(f"made {n} synthetic photos + cache entries in {time.perf_counter() - t:.0f}s")
    return root, cache_dir


def run(ctx: Context) -> None:
    first_vs_cached(ctx)
    scaling(ctx)
