"""Hand keypoints (MediaPipe) and the hand tasks: throughput, where the time goes, training, memory.

Every part is guarded: if `createml_widgets.features.hand_keypoints` / `.video` or the hand tasks are
missing (or MediaPipe is not installed), the rows say "skipped" and the rest of the run goes on.

keypoints:  photos/s with extract_image_keypoints(workers=1 vs 2), video frames/s of a 10 s 30 fps
            640x480 clip (video_keypoints, and extract_video_keypoints on 2 clips with 1 vs 2 workers),
            and a cProfile of single-process loops: the share of time inside MediaPipe's graph vs image
            decoding, video decoding/colour conversion/resizing, and Python around them.
handpose:   MLHandPoseClassifier first run (photos -> keypoints -> GCN) vs cached re-run on the 200
            bundled photos, training iterations/s, prediction latency of one photo, and subprocess
            time/peak memory at 100 / 1,000 / 10,000 examples given as keypoint data frames (real
            keypoints of the bundled photos, jittered), plus (full run) 1,000 synthetic photos end to end.
handaction: MLHandActionClassifier first run vs cached re-run on the bundled clips, iterations/s,
            latency of one 60-frame window (after keypoints), and subprocess time/peak memory at
            100 / 1,000 / 10,000 clips given as keypoint sequences (real sequences, jittered).
"""
from __future__ import annotations

import cProfile
import importlib.util
import pstats
import resource
import time
from pathlib import Path

import numpy as np

from . import (
    DIGITS,
    SAMPLES,
    Context,
    interleaved,
    median,
    mib,
    private_cache,
    ratio_median,
    run_child,
    synthetic_images,
    target_text,
)


def _available(ctx: Context, area: str, *modules: str) -> bool:
    missing = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                missing.append(m)
        except ImportError:
            missing.append(m)
    if missing:
        ctx.add(area, "skipped", "missing: " + ", ".join(missing))
        return False
    return True


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _with_cpu(cands: dict) -> tuple[dict, dict[str, list[float]]]:
    """Wrap each candidate to also record cores busy (CPU s of this process + finished children / wall s)."""
    cpu: dict[str, list[float]] = {k: [] for k in cands}

    def wrap(name, fn):
        def run():
            c0, t0 = _cpu() + _children_cpu(), time.perf_counter()
            fn()
            cpu[name].append((_cpu() + _children_cpu() - c0) / (time.perf_counter() - t0))
        return run
    return {k: wrap(k, fn) for k, fn in cands.items()}, cpu


def _children_cpu() -> float:
    """CPU seconds of finished (waited-for) child processes, e.g. a shut-down worker pool."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# keypoints
# ---------------------------------------------------------------------------------------------
def _clip(ctx: Context, seconds: float = 10.0, size=(640, 480), seed: int = 0, name: str = "wave") -> Path:
    from createml_widgets.samples import make_clips

    def make():
        path = ctx.scratch / f"clip-{name}-{seed}-{size[0]}x{size[1]}-{seconds:g}s.mp4"
        photos = make_clips.digit_photos(make_clips.ACTION_CLASSES[name][0][0])
        return make_clips.make_clip(photos[seed:seed + 3], path, make_clips.ACTION_CLASSES[name][1], fps=30,
                                    seconds=seconds, size=size, seed=seed)
    return ctx.shared(f"clip-{name}-{seed}-{size}-{seconds}", make)


def run_keypoints(ctx: Context) -> None:
    if not _available(ctx, "keypoints", "mediapipe", "createml_widgets.features.hand_keypoints",
                      "createml_widgets.features.video"):
        return
    from createml_widgets.features.hand_keypoints import extract_image_keypoints

    photos = sorted(DIGITS.glob("*/*.JPG"))
    if ctx.quick:
        photos = photos[::2]
    extract_image_keypoints(photos[:4], workers=1)  # MediaPipe's first graph build
    walls: dict[int, float] = {}
    for label, batch in (("", photos), (" x2", photos * 2)) if not ctx.quick else (("", photos),):
        n = len(batch)
        cands, cpu = _with_cpu({f"workers={w}": (lambda w=w, b=batch: extract_image_keypoints(b, workers=w))
                                for w in (1, 2)})
        times = interleaved(cands, rounds=1 if ctx.quick else 2, warmup=False)
        walls[n] = median(times["workers=2"])
        for k, ts in times.items():
            ctx.add("keypoints", f"{n} photos (100x100{label}), extract_image_keypoints {k}", n / median(ts),
                    "photos/s", f"CPU {median(cpu[k]):.2f} cores busy" if k == "workers=1" else
                    f"{ratio_median(times['workers=1'], ts):.2f}x workers=1; includes starting the worker process")
    if len(walls) == 2:  # t(n) = fixed + n / rate, from the two sizes
        (n1, t1), (n2, t2) = sorted(walls.items())
        rate = (n2 - n1) / max(t2 - t1, 1e-9)
        ctx.add("keypoints", "workers=2: steady-state rate / fixed cost per call", rate, "photos/s",
                f"fixed cost {t1 - n1 / rate:.1f} s per call (spawning the pool, importing MediaPipe, building graphs)")
    profile_photos(ctx, photos)
    video(ctx)


def _stats_by_name(prof: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds by function name (summed over files; recursion not double-counted)."""
    st = pstats.Stats(prof)
    out: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
        key = f"{Path(file).name}:{func}"
        out[key] = out.get(key, 0.0) + ct
    return out


def _share(stats: dict[str, float], *names: str) -> float:
    return sum(v for k, v in stats.items() if any(k.endswith(n) for n in names))


def profile_photos(ctx: Context, photos) -> None:
    from createml_widgets.features.hand_keypoints import HandKeypointDetector

    with HandKeypointDetector(video=False) as det:
        det.detect(photos[0])
        prof = cProfile.Profile()
        c0, t0 = _cpu(), time.perf_counter()
        prof.enable()
        for p in photos:
            det.detect(p)
        prof.disable()
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    s = _stats_by_name(prof)
    mp = _share(s, "solution_base.py:process")
    load = _share(s, "hand_detector.py:_as_rgb_array")
    retry = _share(s, "hand_detector.py:_retry_geometry")
    calls = sum(nc for (f, _, fn), (_, nc, *_r) in pstats.Stats(prof).stats.items()
                if fn == "process" and f.endswith("solution_base.py"))
    ctx.add("keypoints", "photo loop, 1 process (profiled)", len(photos) / wall, "photos/s",
            f"CPU {cpu / wall:.2f} cores busy; {calls / len(photos):.2f} MediaPipe runs per photo (retries, fallback)")
    ctx.add("keypoints", "photo loop: share in MediaPipe graph", mp / wall, "", "solution_base.process (C++ graph)")
    ctx.add("keypoints", "photo loop: share decoding (load_image -> RGB array)", load / wall, "")
    ctx.add("keypoints", "photo loop: share resizing/padding for the retry", retry / wall, "")
    ctx.add("keypoints", "photo loop: share other Python", max(0.0, 1 - (mp + load + retry) / wall), "")


def video(ctx: Context) -> None:
    from createml_widgets.features.video import extract_video_keypoints, video_keypoints

    clip = _clip(ctx)
    clip2 = _clip(ctx, seed=3)
    video_keypoints(clip, end=1.0)  # warm-up
    prof = cProfile.Profile()
    c0, t0 = _cpu(), time.perf_counter()
    prof.enable()
    vk = video_keypoints(clip)
    prof.disable()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    frames = len(vk.timestamps)
    s = _stats_by_name(prof)
    mp = _share(s, "solution_base.py:process")
    grab = _share(s, ":<method 'grab' of 'cv2.VideoCapture' objects>")
    retrieve = _share(s, "video.py:retrieve")
    ctx.add("keypoints", "video 10 s 30 fps 640x480, video_keypoints (profiled)", frames / wall, "frames/s",
            f"{frames} frames, hand in {vk.hand_fraction:.0%}; CPU {cpu / wall:.2f} cores busy")
    ctx.add("keypoints", "video: share in MediaPipe graph", mp / wall, "")
    ctx.add("keypoints", "video: share decoding (grab + retrieve/BGR->RGB)", (grab + retrieve) / wall, "")
    ctx.add("keypoints", "video: share other Python", max(0.0, 1 - (mp + grab + retrieve) / wall), "")
    decode = interleaved({"decode": lambda: sum(1 for _ in _iter(clip))}, 2)["decode"]
    ctx.add("keypoints", "video: decode + convert only (iter_frames)", frames / median(decode), "frames/s")
    # The figure: one 10 s clip, as the library extracts it (cut in 2 parts tracked in parallel).
    one = interleaved({w: (lambda w=w: extract_video_keypoints([clip], workers=w)) for w in (1, 2)},
                      rounds=1 if ctx.quick else 3)
    ctx.add("keypoints", "video 10 s 30 fps 640x480, extract_video_keypoints workers=2 (2 parts)", median(one[2]),
            "s", f"{ratio_median(one[1], one[2]):.2f}x workers=1 ({median(one[1]):.2f} s); incl. pool start-up",
            target_text(median(one[2]) < 3.0, "< 3 s"))
    clips = [clip, clip2] if ctx.quick else [clip, clip2, clip, clip2]
    cands, cpu = _with_cpu({f"workers={w}": (lambda w=w: extract_video_keypoints(clips, workers=w)) for w in (1, 2)})
    times = interleaved(cands, rounds=1 if ctx.quick else 2, warmup=False)
    for k, ts in times.items():
        ctx.add("keypoints", f"video: {len(clips)} clips, extract_video_keypoints {k}",
                len(clips) * frames / median(ts), "frames/s", f"CPU {median(cpu[k]):.2f} cores busy" if
                k == "workers=1" else f"{ratio_median(times['workers=1'], ts):.2f}x workers=1, incl. pool start-up")


def _iter(clip):
    from createml_widgets.features.video import DETECTION_MAX_SIDE, iter_frames

    return iter_frames(clip, 30.0, max_side=DETECTION_MAX_SIDE)


# ---------------------------------------------------------------------------------------------
# Shared: first run vs cached, synthetic keypoint data frames, subprocess scaling
# ---------------------------------------------------------------------------------------------
def _train(task, data, params):
    from createml_widgets.session import MLJob

    marks: dict[str, float] = {}
    t = time.perf_counter()
    job = MLJob(task.make_training_session(data, params))
    job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
    model = job._start().result()
    end = time.perf_counter()
    return end - t, model, {
        "extraction": marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end)),
        "training": marks.get("evaluating", end) - marks.get("training", end)}


CHILD_KEYPOINTS = """
import numpy as np, pandas as pd
from createml_widgets.session import MLJob
import createml_widgets as cw
task = getattr(cw, {task!r})
z = np.load({npz!r})
x, y = z["x"], z["y"]
if {task!r} == "MLHandPoseClassifier":  # (N, 1, 3, 21): one pose per row
    df = pd.DataFrame({{"session_id": [f"s{{i}}" for i in range(len(x))], "label": y.astype(str), "keypoints": list(x)}})
else:  # (N, T, 3, 21): one row per frame, grouped by session
    n, t = x.shape[:2]
    df = pd.DataFrame({{"session_id": np.repeat([f"s{{i}}" for i in range(n)], t), "label": np.repeat(y.astype(str), t),
                       "keypoints": list(x.reshape(n * t, 3, 21))}})
t_df = time.perf_counter() - _t0
data = task.DataSource.labeled_keypoints_data_frame(df)
params = task.ModelParameters(maximum_iterations={iterations})
marks = {{}}
t = time.perf_counter()
job = MLJob(task.make_training_session(data, params))
job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
model = job._start().result()
end = time.perf_counter()
_report(run=end - t, training=marks.get("evaluating", end) - marks.get("training", end),
        val_acc=model.validation_metrics.accuracy, startup=t_df)
"""

CHILD_MEDIA = """
from createml_widgets.session import MLJob
import createml_widgets as cw
task = getattr(cw, {task!r})
data = task.DataSource.labeled_directories({root!r})
params = task.ModelParameters(maximum_iterations={iterations})
marks = {{}}
t = time.perf_counter()
job = MLJob(task.make_training_session(data, params))
job.on_phase(lambda ph: marks.setdefault(str(ph), time.perf_counter()))
model = job._start().result()
end = time.perf_counter()
_report(run=end - t, extraction=marks.get("training", end) - marks.get("extractingFeatures", marks.get("training", end)),
        training=marks.get("evaluating", end) - marks.get("training", end), val_acc=model.validation_metrics.accuracy)
"""


def _scaling(ctx: Context, area: str, task_name: str, x: np.ndarray, y: np.ndarray, sizes: dict[int, int],
             unit: str) -> None:
    """Train `task_name` in a subprocess on n jittered copies of (x, y) for {n: iterations}; time + memory."""
    rng = np.random.default_rng(0)
    per_item = {}
    for n, iterations in sizes.items():
        idx = rng.choice(len(x), size=n, replace=n > len(x))
        xs = x[idx] * (1 + 0.01 * rng.standard_normal(x[idx].shape)).astype(np.float32)
        npz = ctx.scratch / f"{task_name}-{n}.npz"
        np.savez(npz, x=xs.astype(np.float32), y=y[idx])
        with private_cache() as cache:
            r = run_child(CHILD_KEYPOINTS.format(task=task_name, npz=str(npz), iterations=iterations),
                          env={"CREATEML_WIDGETS_CACHE": str(cache)})
        per_item[n] = r.data["training"] / iterations / n
        ctx.add(area, f"{n:>6,} {unit}: training {iterations} iterations (subprocess)", r.data["training"], "s",
                f"{iterations / r.data['training']:.2f} it/s; {per_item[n] * 1e6:.0f} us per {unit[:-1]} per "
                f"iteration; whole run {r.data['run']:.1f} s after {r.data['startup']:.1f} s of imports + data frame")
        ctx.add(area, f"{n:>6,} {unit}: peak RSS (subprocess)", mib(r.peak_rss), "MiB",
                f"psutil tree peak {mib(r.peak_tree_rss):.0f} MiB", "< 2 GB: met" if r.peak_rss < 2e9 else
                "< 2 GB: NOT met")
    big, small = sorted(sizes)[-1], sorted(sizes)[-2]
    ctx.add(area, f"per-item training cost {big:,} vs {small:,}", per_item[big] / per_item[small], "x",
            "1.0 = linear growth")


# ---------------------------------------------------------------------------------------------
# handpose
# ---------------------------------------------------------------------------------------------
def run_handpose(ctx: Context) -> None:
    if not _available(ctx, "handpose", "mediapipe", "createml_widgets.tasks.hand_pose_classifier"):
        return
    from createml_widgets import MLHandPoseClassifier as T

    data = T.DataSource.labeled_directories(DIGITS)
    P = T.ModelParameters
    with private_cache():
        first, model, ph = _train(T, data, P())
        again, _, ph2 = _train(T, data, P(maximum_iterations=60))
        x, y = _pose_keypoints(model, data)
    ctx.add("handpose", "200 photos: first run (keypoints + train 80 it)", first, "s",
            f"extraction {ph['extraction']:.1f} s ({200 / ph['extraction']:.0f} photos/s), training "
            f"{ph['training']:.1f} s ({80 / ph['training']:.0f} it/s)")
    ctx.add("handpose", "200 photos: cached re-run (60 it)", again, "s",
            f"{first / again:.1f}x faster; training {ph2['training']:.1f} s ({60 / ph2['training']:.0f} it/s); "
            f"extraction phase {ph2['extraction']:.2f} s (was {ph['extraction']:.1f} s)")
    photo = sorted((DIGITS / "5").glob("*.JPG"))[0]
    model.prediction(photo)
    lat = [_t(model.prediction, photo) for _ in range(10)]
    ctx.add("handpose", "prediction latency, one hand photo (warm)", median(lat) * 1e3, "ms", "MediaPipe + GCN")
    kp = model.keypoints(photo).keypoints
    lat_kp = [_t(model.prediction_from_keypoints, kp) for _ in range(20)]
    ctx.add("handpose", "prediction latency, from keypoints only", median(lat_kp) * 1e3, "ms", "GCN")
    _scaling(ctx, "handpose", "MLHandPoseClassifier", x, y, {100: 10, 1000: 10, 10_000: 10}, "poses")
    if not ctx.quick:
        root = ctx.shared("synthetic-1000", lambda: synthetic_images(ctx.scratch / "syn1000", 1000, seed=1000))
        with private_cache() as cache:
            r = run_child(CHILD_MEDIA.format(task="MLHandPoseClassifier", root=str(root), iterations=80),
                          env={"CREATEML_WIDGETS_CACHE": str(cache)})
        ctx.add("handpose", "1,000 synthetic photos end to end (subprocess)", r.data["run"], "s",
                f"keypoints {r.data['extraction']:.1f} s ({1000 / r.data['extraction']:.0f} photos/s), training "
                f"{r.data['training']:.1f} s ({80 / r.data['training']:.1f} it/s)")
        ctx.add("handpose", "1,000 synthetic photos: peak RSS", mib(r.peak_rss), "MiB",
                f"psutil tree peak (incl. keypoint workers) {mib(r.peak_tree_rss):.0f} MiB",
                "< 2 GB: met" if r.peak_tree_rss < 2e9 else "< 2 GB: NOT met")


def _t(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _pose_keypoints(model, data) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 3, 21) keypoints and labels of the photos where a hand was found (from the feature cache)."""
    from createml_widgets.features.cache import FeatureCache
    from createml_widgets.tasks._hand import HandPoseExtractor

    cache = FeatureCache()
    ext_id = HandPoseExtractor().id
    xs, ys = [], []
    for ex in data._examples()[0]:
        v = cache.get(ex.item(ext_id, "keypoints-given").key)
        if isinstance(v, np.ndarray):
            xs.append(v.reshape(1, 3, 21))
            ys.append(ex.label)
    return np.stack(xs).astype(np.float32), np.array(ys)


# ---------------------------------------------------------------------------------------------
# handaction
# ---------------------------------------------------------------------------------------------
def run_handaction(ctx: Context) -> None:
    if not _available(ctx, "handaction", "mediapipe", "createml_widgets.tasks.hand_action_classifier"):
        return
    from createml_widgets import MLHandActionClassifier as T

    clips_dir = SAMPLES / "hand-action-clips"
    if not clips_dir.is_dir():
        ctx.add("handaction", "skipped", "no bundled hand-action clips")
        return
    data = T.DataSource.labeled_directories(clips_dir)
    P = T.ModelParameters
    n = sum(1 for _ in clips_dir.glob("*/*.mp4"))
    it1, it2 = (10, 5) if ctx.quick else (80, 20)  # 80 = Create ML's default
    with private_cache():
        first, model, ph = _train(T, data, P(maximum_iterations=it1))
        again, _, ph2 = _train(T, data, P(maximum_iterations=it2))
        x, y = _action_keypoints(data, model)
    frames = sum(len(s) for s in x)
    ctx.add("handaction", f"{n} clips: first run (keypoints + train {it1} it)", first, "s",
            f"extraction {ph['extraction']:.1f} s ({frames / ph['extraction']:.0f} frames/s), training "
            f"{ph['training']:.1f} s ({it1 / ph['training']:.2f} it/s)")
    ctx.add("handaction", f"{n} clips: cached re-run ({it2} it)", again, "s",
            f"training {ph2['training']:.1f} s ({it2 / ph2['training']:.2f} it/s); extraction phase "
            f"{ph2['extraction']:.2f} s (was {ph['extraction']:.1f} s)")
    window = np.asarray(x[0][:60], dtype=np.float32)
    model.prediction(window)
    lat = [_t(model.prediction, window) for _ in range(20)]
    ctx.add("handaction", "prediction latency, one 60-frame window (after keypoints)", median(lat) * 1e3, "ms")
    clip = sorted(clips_dir.glob("*/*.mp4"))[0]
    lat_clip = [_t(model.prediction, clip) for _ in range(3)]
    ctx.add("handaction", f"prediction latency, one clip file ({clip.name}, keypoints + windows)",
            median(lat_clip) * 1e3, "ms")
    seqs = np.stack([_fit(s, 60) for s in x])
    # ~22 ms per 60-frame clip per iteration (4 random windows each): 10,000 clips only with --large
    sizes = {100: 1, 1000: 1, 10_000: 1} if ctx.large else {100: 1, 1000: 1}
    _scaling(ctx, "handaction", "MLHandActionClassifier", seqs, y, sizes, "clips")


def _fit(seq: np.ndarray, t: int) -> np.ndarray:
    seq = np.asarray(seq, dtype=np.float32).reshape(-1, 3, 21)
    if len(seq) >= t:
        return seq[:t]
    return np.concatenate([seq, np.zeros((t - len(seq), 3, 21), np.float32)])


def _action_keypoints(data, model) -> tuple[list[np.ndarray], np.ndarray]:
    from createml_widgets.features.cache import FeatureCache
    from createml_widgets.tasks.hand_action_classifier import HandActionExtractor

    cache = FeatureCache()
    ext_id = HandActionExtractor(30.0).id
    xs, ys = [], []
    for ex in data._examples()[0]:
        v = cache.get(ex.item(ext_id, "keypoints-given").key)
        if isinstance(v, np.ndarray):
            xs.append(v)
            ys.append(ex.label)
    return xs, np.array(ys)
