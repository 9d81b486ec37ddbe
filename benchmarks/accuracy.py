"""Accuracy on held-out data against plain baselines: `python -m benchmarks --only accuracy`.

Every figure is the mean ± standard deviation over repeated stratified splits (one per seed): each
split trains on part of every class and is scored on the rest, never on what the model trained on.

* hand action: the finger-gesture development set (`createml_widgets/samples/make_gestures.py`: a real
  pointing hand moved along drawn paths, left/right/up/down/circle, plus "other"; 20 clips of 4 s at
  25 fps per class, 14 train / 6 test per class and split). This project: MLHandActionClassifier with a
  window of 30 frames at 15 fps and every video augmentation. Baseline: the index fingertip's trajectory
  over the clip (32 steps, relative to its first position) into a 2-layer MLP.
* hand action, real fingertip paths: the same generator with the 5,295 REAL recorded index-fingertip
  paths (shared/datasets/fingertip-trajectories, classes Stop, Clockwise, Counter Clockwise, Move)
  driving the hand; 12 clips per class, 8 train / 4 test per class and split. Same model and baseline.
* hand action, sample clips: the 24 bundled clips (createml_widgets/samples/hand-action-clips: count_up,
  rotate, wave, zoom; 2 s each), 4 train / 2 test per class and split. Same model and baseline.
* hand pose: the 200 bundled sign-language photos (14 train / 6 test per class); a photo with no
  detected hand counts as wrong for both. Baseline: wrist-relative 2-D keypoints into a 2-layer MLP.
  Also hands found / photos on the sample and on harder copies (64 x 64, rotated 30 degrees, darker).
* image: the same photos, MLImageClassifier (scene_print revision 1, logistic regressor, defaults)
  against a multinomial logistic regression with L2 (scikit-learn's LogisticRegression objective,
  C = 1, run to convergence) on the same Lite0 features.

The generated clips and the keypoints extracted from them are kept in $CMLW_BENCH_CACHE (default
~/.cache/createml_widgets-bench) keyed by generator version and extractor, so a second run spends its
time on training only. --quick: 2 seeds and fewer iterations.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from . import DIGITS, Context

AREA = "accuracy"
GESTURE_CLIPS_PER_CLASS = 20
GESTURE_TRAIN_PER_CLASS = 14
GESTURE_FPS, GESTURE_SECONDS = 25.0, 4.0
TRAJECTORY_CLIPS_PER_CLASS, TRAJECTORY_TRAIN_PER_CLASS = 12, 8  # the real-path set (Stop, Clockwise, ...)
SAMPLE_CLIPS_TRAIN_PER_CLASS = 4  # of the 6 bundled clips per class; 2 tested
ACTION_FRAME_RATE, ACTION_WINDOW = 15.0, 30
POSE_TRAIN_PER_CLASS = 14


def bench_cache() -> Path:
    root = Path(os.environ.get("CMLW_BENCH_CACHE") or Path.home() / ".cache" / "createml_widgets-bench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def spread(values) -> str:
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def stratified(labels, train_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): `train_per_class` of each label for training, the rest for testing."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, test = [], []
    for label in sorted(set(labels.tolist())):
        idx = rng.permutation(np.flatnonzero(labels == label))
        train += idx[:train_per_class].tolist()
        test += idx[train_per_class:].tolist()
    return np.array(sorted(train)), np.array(sorted(test))


# -- data -------------------------------------------------------------------------------------------------
def gesture_keypoints(classes=None, clips_per_class: int = GESTURE_CLIPS_PER_CLASS, seed: int = 0,
                      log=print) -> tuple[list[np.ndarray], np.ndarray]:
    """(keypoint sequences at ACTION_FRAME_RATE, labels) of the generated finger-gesture set."""
    from createml_widgets.features.video import extract_video_keypoints
    from createml_widgets.samples import make_gestures as g
    from createml_widgets.tasks.hand_action_classifier import HandActionExtractor

    classes = tuple(classes or g.DEFAULT_CLASSES)
    params = (g.GENERATOR_VERSION, classes, clips_per_class, seed, GESTURE_FPS, GESTURE_SECONDS)
    folder = bench_cache() / f"gestures-{_key(*params)}"
    ext_id = HandActionExtractor(ACTION_FRAME_RATE).id
    store = folder / f"keypoints-{_key(ext_id)}.npz"
    if store.is_file():
        with np.load(store, allow_pickle=False) as z:
            n = int(z["count"])
            return [z[f"s{i}"] for i in range(n)], z["labels"]
    t = time.perf_counter()
    written = g.make_gesture_dataset(folder / "clips", clips_per_class, classes, fps=GESTURE_FPS,
                                     seconds=GESTURE_SECONDS, seed=seed)
    log(f"generated {sum(map(len, written.values()))} clips in {time.perf_counter() - t:.0f} s")
    paths = [(p, label) for label, ps in written.items() for p in ps]
    t = time.perf_counter()
    results = extract_video_keypoints([str(p) for p, _ in paths], ACTION_FRAME_RATE)
    log(f"keypoints of {len(paths)} clips in {time.perf_counter() - t:.0f} s")
    seqs, labels = [], []
    for (_, label), res in zip(paths, results):
        if isinstance(res, BaseException):
            raise res
        seqs.append(res.keypoints.astype(np.float32))
        labels.append(label)
    np.savez_compressed(store, count=len(seqs), labels=np.array(labels), **{f"s{i}": s for i, s in enumerate(seqs)})
    return seqs, np.array(labels)


def sample_clip_keypoints(log=print) -> tuple[list[np.ndarray], np.ndarray]:
    """(keypoint sequences at ACTION_FRAME_RATE, labels) of the 24 bundled hand-action clips, cached by
    the clips' bytes and the extractor."""
    from createml_widgets.features.video import extract_video_keypoints
    from createml_widgets.samples import hand_action_clips
    from createml_widgets.tasks.hand_action_classifier import HandActionExtractor

    folder = hand_action_clips()
    clips = sorted(folder.glob("*/*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no bundled hand-action clips (*/*.mp4) under {folder}")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in clips)).hexdigest()[:16]
    store = bench_cache() / f"sample-clips-{_key(digest, HandActionExtractor(ACTION_FRAME_RATE).id)}.npz"
    labels = np.array([p.parent.name for p in clips])
    if store.is_file():
        with np.load(store, allow_pickle=False) as z:
            return [z[f"s{i}"] for i in range(int(z["count"]))], labels
    t = time.perf_counter()
    results = extract_video_keypoints([str(p) for p in clips], ACTION_FRAME_RATE)
    log(f"keypoints of {len(clips)} sample clips in {time.perf_counter() - t:.0f} s")
    seqs = []
    for res in results:
        if isinstance(res, BaseException):
            raise res
        seqs.append(res.keypoints.astype(np.float32))
    np.savez_compressed(store, count=len(seqs), **{f"s{i}": s for i, s in enumerate(seqs)})
    return seqs, labels


def _photos() -> tuple[list[Path], np.ndarray]:
    files = sorted(p for p in DIGITS.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files, np.array([p.parent.name for p in files])


def harder(image, kind: str):
    """A harder copy of a PIL photo: "small" (64 x 64), "rotated" (30 degrees), "dark" (a third of the light)."""
    from PIL import Image, ImageEnhance

    if kind == "small":
        return image.resize((64, 64), Image.BILINEAR)
    if kind == "rotated":
        return image.rotate(30, resample=Image.BILINEAR, expand=True, fillcolor=tuple(
            int(v) for v in np.asarray(image).reshape(-1, 3)[:200].mean(0)))
    if kind == "dark":
        return ImageEnhance.Brightness(image).enhance(0.33)
    if kind == "original":
        return image
    raise ValueError(kind)


def photo_keypoints(kind: str = "original", log=print) -> np.ndarray:
    """(200, 1, 3, 21) keypoints of the sample photos (zeros: no hand), cached by extractor."""
    from PIL import Image

    from createml_widgets.features import hand_keypoints as hk
    from createml_widgets.tasks._hand import mediapipe_id

    files, _ = _photos()
    store = bench_cache() / f"photo-keypoints-{kind}-{_key(mediapipe_id(), hk.EXTRACTOR_ID, len(files))}.npy"
    if store.is_file():
        return np.load(store)
    t = time.perf_counter()
    if kind == "original":
        obs = hk.extract_image_keypoints([str(p) for p in files])
    else:
        with hk.HandKeypointDetector(video=False) as det:
            obs = []
            for p in files:
                with Image.open(p) as im:
                    obs.append(det.detect(np.asarray(harder(im.convert("RGB"), kind))))
    out = hk.keypoints_array(obs)
    np.save(store, out)
    log(f"hand keypoints of {len(files)} {kind} photos in {time.perf_counter() - t:.0f} s")
    return out


# -- baselines ----------------------------------------------------------------------------------------------
def mlp_fit_predict(x_train, y_train, x_test, classes: int, seed: int, hidden: int = 64, epochs: int = 300,
                    weight_decay: float = 1e-4) -> np.ndarray:
    """A plain 2-layer MLP (ReLU, dropout 0.1, Adam, full batch, standardised inputs): test predictions."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.tensor(x_train, dtype=torch.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x = (x - mu) / sd
    y = torch.tensor(y_train, dtype=torch.long)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes))
    for p in net.parameters():
        if p.dim() > 1:
            torch.nn.init.kaiming_uniform_(p, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    net.train()
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return net((torch.tensor(x_test, dtype=torch.float32) - mu) / sd).argmax(1).numpy()


def fingertip_trajectory(seq: np.ndarray, steps: int = 32) -> np.ndarray:
    """The index fingertip over the clip at `steps` evenly spaced times, relative to its first position
    (frames without a hand filled from the nearest frame with one): (2 * steps,)."""
    tip = np.asarray(seq, dtype=np.float64).reshape(-1, 3, 21)[:, :2, 8]
    seen = np.abs(tip).sum(1) > 0
    if not seen.any():
        return np.zeros(2 * steps)
    frames = np.arange(len(tip))
    filled = np.stack([np.interp(frames, frames[seen], tip[seen, d]) for d in range(2)], axis=1)
    at = np.linspace(0, len(tip) - 1, steps)
    path = np.stack([np.interp(at, frames, filled[:, d]) for d in range(2)], axis=1)
    return (path - path[0]).ravel()


def wrist_relative(kp: np.ndarray) -> np.ndarray:
    """(N, 42): x, y of each joint minus the wrist's."""
    xy = np.asarray(kp, dtype=np.float64).reshape(-1, 3, 21)[:, :2]
    return (xy - xy[:, :, :1]).reshape(len(xy), -1)


def logistic_l2_fit_predict(x_train, y_train, x_test, classes: int, c: float = 1.0, max_iter: int = 500):
    """scikit-learn's multinomial LogisticRegression(C=c) objective, sum of cross-entropies + ||W||^2 / (2C)
    (intercept not penalised), minimised with L-BFGS: test predictions."""
    import torch

    x = torch.tensor(x_train, dtype=torch.float64)
    y = torch.tensor(y_train, dtype=torch.long)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * c)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.tensor(x_test, dtype=torch.float64) @ w + b).argmax(1).numpy()


# -- this project -----------------------------------------------------------------------------------------------
def action_frame(seqs, labels):
    import pandas as pd

    rows = [{"session_id": f"clip{i}", "label": str(label), "keypoints": f[None]}
            for i, (seq, label) in enumerate(zip(seqs, labels)) for f in seq]
    return pd.DataFrame(rows)


def action_parameters(iterations: int | None = None, **overrides):
    from createml_widgets import MLHandActionClassifier as HA
    from createml_widgets.data.validation import ValidationData

    V = HA.VideoAugmentationOptions
    every = V(0)
    for flag in V:
        every |= flag
    kw = {"prediction_window_size": ACTION_WINDOW, "target_frame_rate": ACTION_FRAME_RATE,
          "augmentation_options": every, "validation": ValidationData.none()}
    if iterations:
        kw["maximum_iterations"] = iterations
    kw.update(overrides)
    return HA.ModelParameters(**kw)


def action_accuracy(seqs, labels, train, test, params) -> float:
    """Clip accuracy of MLHandActionClassifier trained on `train`, scored on `test` (no hand: wrong)."""
    import warnings

    from createml_widgets import MLHandActionClassifier as HA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HA(HA.DataSource.labeled_keypoints_data_frame(
            action_frame([seqs[i] for i in train], labels[train])), params)
    probs = model._predict_features([seqs[i] for i in test])
    predicted = np.array(model.class_labels)[probs.argmax(1)]
    has_hand = np.array([np.abs(seqs[i]).sum() > 0 for i in test])
    return float(((predicted == labels[test]) & has_hand).mean())


def photo_views(log=print) -> list[np.ndarray]:
    """Each sample photo's (V, 3, 21) test-time views, as the library predicts a photo (zeros (1, 3, 21): no hand)."""
    from createml_widgets.features import hand_keypoints as hk
    from createml_widgets.tasks._hand import HandPoseViewsExtractor

    files, _ = _photos()
    store = bench_cache() / f"photo-views-{_key(HandPoseViewsExtractor().id, len(files))}.npz"
    if store.is_file():
        with np.load(store) as z:
            return np.split(z["views"], np.cumsum(z["counts"])[:-1])
    t = time.perf_counter()
    obs = hk.extract_image_keypoints([str(p) for p in files], views=True)
    out = [o.all_views() if o is not None and not isinstance(o, BaseException) else np.zeros((1, 3, 21), np.float32)
           for o in obs]
    np.savez(store, views=np.concatenate(out), counts=np.array([len(v) for v in out]))
    log(f"hand keypoint views of {len(files)} photos in {time.perf_counter() - t:.0f} s")
    return out


def pose_accuracy(kp, labels, train, test, params=None, views=None) -> float:
    """Train on `kp[train]`, score `test`; with `views` (photo_views) the test photos are predicted from
    their views, as `MLHandPoseClassifier.prediction` does, else from `kp` alone."""
    import pandas as pd

    from createml_widgets import MLHandPoseClassifier as HP
    from createml_widgets.data.validation import ValidationData

    found = np.abs(kp).sum(axis=(1, 2, 3)) > 0
    rows = [{"session_id": f"p{i}", "label": str(labels[i]), "keypoints": kp[i]} for i in train if found[i]]
    params = params or HP.ModelParameters(validation=ValidationData.none())
    model = HP(HP.DataSource.labeled_keypoints_data_frame(pd.DataFrame(rows)), params)
    probs = model._predict_features([(views[i] if views is not None else kp[i]) for i in test])
    predicted = np.array(model.class_labels)[probs.argmax(1)]
    return float(((predicted == labels[test]) & found[test]).mean())


# -- the area -------------------------------------------------------------------------------------------------------
def run(ctx: Context) -> None:
    seeds = list(range(2 if ctx.quick else 3))
    run_handaction(ctx, seeds)
    run_handaction_trajectories(ctx, seeds)
    run_handaction_sample_clips(ctx, seeds)
    run_handpose(ctx, seeds)
    run_image(ctx, seeds)


def run_handaction(ctx: Context, seeds, params=None, name: str = "this project") -> None:
    seqs, labels = gesture_keypoints(log=ctx.log)
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(v) for v in labels])
    params = params or action_parameters(20 if ctx.quick else None)
    ours, base = [], []
    t = time.perf_counter()
    for seed in seeds:
        train, test = stratified(labels, GESTURE_TRAIN_PER_CLASS, seed)
        ours.append(action_accuracy(seqs, labels, train, test, params))
        feats = np.stack([fingertip_trajectory(s) for s in seqs])
        pred = mlp_fit_predict(feats[train], y[train], feats[test], len(classes), seed)
        base.append(float((pred == y[test]).mean()))
        ctx.log(f"hand action seed {seed}: {name} {ours[-1]:.3f}, baseline {base[-1]:.3f}")
    n_test = len(labels) - GESTURE_TRAIN_PER_CLASS * len(classes)
    what = (f"finger gestures ({', '.join(classes)}), {GESTURE_TRAIN_PER_CLASS} train / "
            f"{n_test // len(classes)} test clips per class, {len(seeds)} splits")
    ctx.add(AREA, f"hand action: {name}", spread(ours), "clip acc", what,
            ">= 0.90: " + ("met" if statistics.mean(ours) >= 0.90 else "not met"))
    ctx.add(AREA, "hand action: baseline (fingertip 32 steps, MLP)", spread(base), "clip acc",
            f"{time.perf_counter() - t:.0f} s for both")


def action_vs_baseline(seqs, labels, train_per_class: int, seeds, params, log=print, tag: str = "hand action"):
    """(ours, baseline): clip accuracies per seed on the same stratified splits."""
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(v) for v in labels])
    feats = np.stack([fingertip_trajectory(s) for s in seqs])
    ours, base = [], []
    for seed in seeds:
        train, test = stratified(labels, train_per_class, seed)
        ours.append(action_accuracy(seqs, labels, train, test, params))
        pred = mlp_fit_predict(feats[train], y[train], feats[test], len(classes), seed)
        base.append(float((pred == y[test]).mean()))
        log(f"{tag} seed {seed}: this project {ours[-1]:.3f}, baseline {base[-1]:.3f}")
    return ours, base


def run_handaction_trajectories(ctx: Context, seeds, params=None) -> None:
    """Hand action on clips driven by the REAL recorded fingertip paths (make_gestures TRAJECTORY_CLASSES)."""
    from createml_widgets.samples import make_gestures as g

    seqs, labels = gesture_keypoints(g.TRAJECTORY_CLASSES, TRAJECTORY_CLIPS_PER_CLASS, log=ctx.log)
    params = params or action_parameters(20 if ctx.quick else None)
    t = time.perf_counter()
    ours, base = action_vs_baseline(seqs, labels, TRAJECTORY_TRAIN_PER_CLASS, seeds, params, ctx.log,
                                    "hand action (real paths)")
    classes = sorted(set(labels.tolist()))
    n_test = TRAJECTORY_CLIPS_PER_CLASS - TRAJECTORY_TRAIN_PER_CLASS
    ctx.add(AREA, "hand action, real fingertip paths: this project", spread(ours), "clip acc",
            f"{', '.join(classes)}; {TRAJECTORY_TRAIN_PER_CLASS} train / {n_test} test clips per class, "
            f"{len(seeds)} splits", ">= baseline: " + ("met" if statistics.mean(ours) >= statistics.mean(base)
                                                       else "not met"))
    ctx.add(AREA, "hand action, real fingertip paths: baseline (fingertip 32 steps, MLP)", spread(base),
            "clip acc", f"{time.perf_counter() - t:.0f} s for both")


def run_handaction_sample_clips(ctx: Context, seeds, params=None) -> None:
    """Hand action on the 24 bundled sample clips (4 labels x 6), repeated stratified splits."""
    seqs, labels = sample_clip_keypoints(log=ctx.log)
    params = params or action_parameters(20 if ctx.quick else None)
    t = time.perf_counter()
    ours, base = action_vs_baseline(seqs, labels, SAMPLE_CLIPS_TRAIN_PER_CLASS, seeds, params, ctx.log,
                                    "hand action (sample clips)")
    classes = sorted(set(labels.tolist()))
    n_test = len(labels) // len(classes) - SAMPLE_CLIPS_TRAIN_PER_CLASS
    ctx.add(AREA, "hand action, sample clips: this project", spread(ours), "clip acc",
            f"{', '.join(classes)}; {SAMPLE_CLIPS_TRAIN_PER_CLASS} train / {n_test} test clips per class, "
            f"{len(seeds)} splits", ">= baseline: " + ("met" if statistics.mean(ours) >= statistics.mean(base)
                                                       else "not met"))
    ctx.add(AREA, "hand action, sample clips: baseline (fingertip 32 steps, MLP)", spread(base), "clip acc",
            f"{time.perf_counter() - t:.0f} s for both")


def run_handpose(ctx: Context, seeds, params=None, name: str = "this project") -> None:
    files, labels = _photos()
    kp = photo_keypoints(log=ctx.log)
    views = photo_views(log=ctx.log)
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(v) for v in labels])
    found = np.abs(kp).sum(axis=(1, 2, 3)) > 0
    ours, base = [], []
    for seed in seeds:
        train, test = stratified(labels, POSE_TRAIN_PER_CLASS, seed)
        ours.append(pose_accuracy(kp, labels, train, test, params, views=views))
        feats = wrist_relative(kp)
        tr = train[found[train]]
        pred = mlp_fit_predict(feats[tr], y[tr], feats[test], len(classes), seed)
        base.append(float(((pred == y[test]) & found[test]).mean()))
        ctx.log(f"hand pose seed {seed}: {name} {ours[-1]:.3f}, baseline {base[-1]:.3f}")
    what = f"sample photos, {POSE_TRAIN_PER_CLASS} train / {20 - POSE_TRAIN_PER_CLASS} test per class, " \
           f"{len(seeds)} splits; no hand = wrong"
    ctx.add(AREA, f"hand pose: {name}", spread(ours), "acc", what,
            ">= 0.985: " + ("met" if statistics.mean(ours) >= 0.985 else "not met"))
    ctx.add(AREA, "hand pose: baseline (wrist-relative 2-D, MLP)", spread(base), "acc")
    for kind in ("original", "small", "rotated", "dark"):
        k = kp if kind == "original" else photo_keypoints(kind, log=ctx.log)
        n = int((np.abs(k).sum(axis=(1, 2, 3)) > 0).sum())
        ctx.add(AREA, f"hand pose: hands found, {kind} photos", f"{n}/{len(files)}", "photos",
                {"original": "100 x 100", "small": "downscaled to 64 x 64", "rotated": "30 degrees",
                 "dark": "brightness x 0.33"}[kind])


def run_image(ctx: Context, seeds) -> None:
    from createml_widgets import MLImageClassifier as IC
    from createml_widgets.data.validation import ValidationData
    from createml_widgets.features.cache import FeatureCache
    from createml_widgets.features.image_embedding import ImageEmbeddingExtractor

    files, labels = _photos()
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(v) for v in labels])
    ours, base = [], []
    feats = None
    for seed in seeds:
        train, test = stratified(labels, POSE_TRAIN_PER_CLASS, seed)
        by_label = lambda idx: {c: [files[i] for i in idx if labels[i] == c] for c in classes}  # noqa: E731
        model = IC(by_label(train), IC.ModelParameters(validation=ValidationData.none()))
        ours.append(float(model.evaluation(by_label(test)).accuracy))
        if feats is None:  # the very features the model trained on, from the feature cache
            ext_id = ImageEmbeddingExtractor(IC.ModelParameters().feature_extractor).id
            from createml_widgets.data.items import Item

            cache = FeatureCache()
            feats = np.stack([np.asarray(cache.get(Item(p, labels[i]).resolve_key(ext_id).key), dtype=np.float64)
                              for i, p in enumerate(files)])
        pred = logistic_l2_fit_predict(feats[train], y[train], feats[test], len(classes))
        base.append(float((pred == y[test]).mean()))
        ctx.log(f"image seed {seed}: this project {ours[-1]:.3f}, baseline {base[-1]:.3f}")
    ctx.add(AREA, "image: this project (revision 1, logistic, defaults)", spread(ours), "acc",
            f"sample photos, {POSE_TRAIN_PER_CLASS} train / {20 - POSE_TRAIN_PER_CLASS} test per class, "
            f"{len(seeds)} splits", ">= baseline: " + ("met" if statistics.mean(ours) >= statistics.mean(base)
                                                       else "not met"))
    ctx.add(AREA, "image: baseline (L2 logistic regression, C=1, same features)", spread(base), "acc")


# -- variants (python -m benchmarks --only accuracy-variants) ----------------------------------------------------
ACTION_VARIANTS = {
    # name: (module settings of tasks/hand_action_classifier.py, ModelParameters overrides)
    "joints, flip keeps labels, windows side by side": ({"NET_STREAMS": ("joints",), "MIRROR_PAIRS": (),
                                                         "CLIP_STRIDE": 1.0}, {}),
    "+ flip swaps left/right": ({"NET_STREAMS": ("joints",), "CLIP_STRIDE": 1.0}, {}),
    "+ motion and bone streams": ({"NET_STREAMS": ("joints", "motion", "bones"), "CLIP_STRIDE": 1.0}, {}),
    "+ clip answer from windows every 1/4 window": ({"NET_STREAMS": ("joints", "motion", "bones"),
                                                     "CLIP_STRIDE": 0.25}, {}),
}


def run_variants(ctx: Context) -> None:
    """Hand action on the gesture set for each ACTION_VARIANTS entry, same splits, mean ± sd."""
    import contextlib

    from createml_widgets.tasks import hand_action_classifier as module

    seeds = list(range(2 if ctx.quick else 3))
    only = [v.strip() for v in os.environ.get("CMLW_ACTION_VARIANTS", "").split("|") if v.strip()]
    for name, (settings, overrides) in ACTION_VARIANTS.items():
        if only and not any(o in name for o in only):
            continue
        with contextlib.ExitStack() as stack:
            for attr, value in settings.items():
                old = getattr(module, attr)
                stack.callback(setattr, module, attr, old)
                setattr(module, attr, value)
            run_handaction(ctx, seeds, action_parameters(20 if ctx.quick else None, **overrides), name=name)
