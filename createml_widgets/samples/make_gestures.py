"""A development set of finger-gesture clips made from a REAL pointing hand and REAL fingertip paths.

Hand-action models are judged here on clips that resemble egocentric finger gestures (a hand-held camera
watching one pointing hand draw a shape), which the project has no real recordings of:

* the hand is a real photo of a pointing hand (sample class "1" of sign-language-digits), pasted with a
  feathered edge onto a background made of blurred, blown-up crops of the sample photos' top corners
  (the real rooms behind the hands, nothing downloaded);
* it moves along a path: a drawn one (``left``, ``right``, ``up``, ``down``, ``circle``) or a real
  recorded index-fingertip path (``Stop``, ``Clockwise``, ``Counter Clockwise``, ``Move``: 5,295 paths
  recorded with a webcam and MediaPipe, ``fingertip-trajectories`` in the development checkout's
  shared datasets, Apache-2.0; several paths of one class are chained end to end, each 16 steps);
* ``other``: a hand (any digit's photo, the pose may change) that does not move purposefully: it
  holds, wanders slowly, fidgets;
* what varies between clips: hand-held camera shake (background and hand move together), tremor,
  the gesture's start, length and speed (a speed that changes within the gesture), the path's size and
  direction jitter, the hand's size and angle drifting over the clip, brightness.

Clips are generated at run time (`make_gesture_dataset`) into a folder the caller chooses (a cache or a
temporary folder); none are committed. ``python -m createml_widgets.samples.make_gestures OUT`` writes
one as labelled folders.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .make_clips import SIGN_DIGITS_DIR, _feather_mask, _load_rgb, digit_photos

DRAWN_CLASSES = ("left", "right", "up", "down", "circle")
TRAJECTORY_CLASSES = ("Stop", "Clockwise", "Counter Clockwise", "Move")
OTHER_CLASS = "other"
GESTURE_CLASSES = DRAWN_CLASSES + TRAJECTORY_CLASSES + (OTHER_CLASS,)
# The held-out set the issue describes: left, right, up, down, circle, other.
DEFAULT_CLASSES = DRAWN_CLASSES + (OTHER_CLASS,)
# Class names swapped by a horizontal mirror (the rest stay what they are).
MIRRORED_LABELS = {"left": "right", "right": "left", "Clockwise": "Counter Clockwise",
                   "Counter Clockwise": "Clockwise"}
POINTING_DIGIT = "1"
FINGERTIP_ENV = "CREATEML_WIDGETS_FINGERTIP_PATHS"
GENERATOR_VERSION = "gestures/v1"  # changes whenever the same arguments could give other clips


# -- real fingertip paths ---------------------------------------------------------------------------
def find_fingertip_paths(root: str | os.PathLike | None = None) -> Path:
    """The folder holding point_history.csv: `root`, else $CREATEML_WIDGETS_FINGERTIP_PATHS, else
    shared/datasets/fingertip-trajectories beside (or above) this checkout."""
    if root is None and os.environ.get(FINGERTIP_ENV):
        root = os.environ[FINGERTIP_ENV]
    if root is not None:
        path = Path(root)
        if not (path / "point_history.csv").is_file():
            raise FileNotFoundError(f"{path} has no point_history.csv: pass fingertip_root (or set {FINGERTIP_ENV}) "
                                    "to the fingertip-trajectories folder")
        return path
    here = Path(__file__).resolve()
    for parent in here.parents[1:6]:
        for candidate in (parent / "shared" / "datasets" / "fingertip-trajectories",
                          parent.parent / "shared" / "datasets" / "fingertip-trajectories"):
            if (candidate / "point_history.csv").is_file():
                return candidate
    raise FileNotFoundError("the real fingertip paths (fingertip-trajectories/point_history.csv) were not found: "
                            f"pass fingertip_root or set {FINGERTIP_ENV} to that folder")


def load_fingertip_paths(root: str | os.PathLike | None = None) -> dict[str, list[np.ndarray]]:
    """{class name: [(16, 2) float paths]} — x, y offsets from the first step, as fractions of the image
    width and height (y down). A (0, 0) step after the first (the sign was not detected) is filled in
    from its neighbours."""
    folder = find_fingertip_paths(root)
    names = [line.strip().lstrip("\ufeff") for line in (folder / "labels.csv").read_text(encoding="utf-8-sig")
             .splitlines() if line.strip()] if (folder / "labels.csv").is_file() else list(TRAJECTORY_CLASSES)
    table = np.loadtxt(folder / "point_history.csv", delimiter=",", encoding="utf-8-sig", ndmin=2)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for row in table:
        path = row[1:33].reshape(16, 2).copy()
        missing = np.abs(path).sum(axis=1) == 0
        missing[0] = False
        if missing.any() and (~missing).sum() >= 2:
            steps = np.arange(16)
            for d in range(2):
                path[missing, d] = np.interp(steps[missing], steps[~missing], path[~missing, d])
        out[names[int(row[0])]].append(path)
    return out


# -- backgrounds ------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, size: tuple[int, int], pool: Sequence[Path]) -> np.ndarray:
    """A (h, w, 3) float canvas: a mosaic of blurred, blown-up crops of the sample photos' backgrounds."""
    import cv2

    w, h = size
    canvas = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    for _ in range(int(rng.integers(3, 7))):
        photo = _load_rgb(pool[int(rng.integers(len(pool)))]).astype(np.float32)
        ph, pw = photo.shape[:2]
        # a crop of a top corner: the room behind the hand, not the hand (a blurred hand in the
        # background would be a second hand to the palm detector)
        cw, ch = int(rng.integers(pw // 5, pw // 3 + 1)), int(rng.integers(ph // 5, ph // 3 + 1))
        x0, y0 = (0 if rng.random() < 0.5 else pw - cw), int(rng.integers(0, ph // 10 + 1))
        crop = photo[y0:y0 + ch, x0:x0 + cw]
        bw, bh = int(w * rng.uniform(0.5, 1.2)), int(h * rng.uniform(0.5, 1.2))
        tile = cv2.resize(crop, (bw, bh), interpolation=cv2.INTER_CUBIC)
        cx, cy = int(rng.integers(-bw // 3, w - bw // 2)), int(rng.integers(-bh // 3, h - bh // 2))
        xs, ys = slice(max(0, cx), min(w, cx + bw)), slice(max(0, cy), min(h, cy + bh))
        if xs.stop <= xs.start or ys.stop <= ys.start:
            continue
        part = tile[ys.start - cy:ys.stop - cy, xs.start - cx:xs.stop - cx]
        mask = _feather_mask(*part.shape[:2], fraction=0.3)[:, :, None]
        canvas[ys, xs] += part * mask
        weight[ys, xs] += mask
    base = canvas.reshape(-1, 3).sum(0) / max(1e-6, float(weight.sum()))
    canvas = (canvas + base * 0.05) / (weight + 0.05)
    sigma = max(w, h) * rng.uniform(0.01, 0.04)
    return cv2.GaussianBlur(canvas, (0, 0), sigmaX=sigma)


# -- paths --------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, n: int, cutoff_frames: float, dims: int = 2) -> np.ndarray:
    """(n, dims) noise with unit standard deviation, low-passed over about `cutoff_frames` frames."""
    raw = rng.standard_normal((n + 64, dims))
    k = max(1, int(cutoff_frames))
    kernel = np.hanning(2 * k + 1)
    kernel /= kernel.sum()
    out = np.stack([np.convolve(raw[:, d], kernel, mode="same") for d in range(dims)], axis=1)[32:32 + n]
    return out / max(1e-6, float(out.std()))


def _progress(rng: np.random.Generator, n: int, fps: float, seconds: float) -> tuple[np.ndarray, float, float]:
    """How far along its path the gesture is at each frame (0 before it starts, 1 after it ends), with a
    speed that changes within the gesture; and the gesture's start and length in seconds."""
    length = float(rng.uniform(0.35, 0.7)) * seconds
    start = float(rng.uniform(0.05, 0.95)) * (seconds - length)
    t = np.arange(n) / fps
    u = np.clip((t - start) / length, 0.0, 1.0)
    # speed: eased in and out, modulated (people speed up and slow down)
    speed = np.sin(np.pi * np.clip(u, 1e-3, 1 - 1e-3)) ** float(rng.uniform(0.3, 1.0))
    speed = speed * (1.0 + float(rng.uniform(0.1, 0.5)) * np.sin(2 * np.pi * float(rng.uniform(0.5, 2.0)) * u
                                                                  + float(rng.uniform(0, 2 * np.pi))))
    speed = np.where((t >= start) & (t <= start + length), np.maximum(speed, 0.05), 0.0)
    prog = np.cumsum(speed)
    prog = prog / prog[-1] if prog[-1] > 0 else u
    return prog, start, length


def _drawn_path(name: str, u: np.ndarray, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """(n, 2) pixel offsets from the start for progress `u` along a drawn gesture."""
    if name in ("left", "right"):
        span = float(rng.uniform(0.3, 0.55)) * w * (-1 if name == "left" else 1)
        bow = float(rng.uniform(-0.06, 0.06)) * h
        slope = float(rng.uniform(-0.12, 0.12))
        x = span * u
        return np.stack([x, slope * x + bow * np.sin(np.pi * u)], axis=1)
    if name in ("up", "down"):
        span = float(rng.uniform(0.25, 0.45)) * h * (-1 if name == "up" else 1)
        bow = float(rng.uniform(-0.05, 0.05)) * w
        slope = float(rng.uniform(-0.15, 0.15))
        y = span * u
        return np.stack([slope * y + bow * np.sin(np.pi * u), y], axis=1)
    if name == "circle":
        r = float(rng.uniform(0.12, 0.22)) * h
        aspect = float(rng.uniform(0.75, 1.25))
        turns = float(rng.uniform(0.9, 1.6)) * (1 if rng.random() < 0.5 else -1)
        a0 = float(rng.uniform(0, 2 * np.pi))
        a = a0 + 2 * np.pi * turns * u
        return np.stack([r * aspect * (np.cos(a) - np.cos(a0)), r * (np.sin(a) - np.sin(a0))], axis=1)
    raise ValueError(f"unknown drawn gesture {name!r}")


def _recorded_path(name: str, u: np.ndarray, rng: np.random.Generator, w: int, h: int,
                   paths: dict[str, list[np.ndarray]], gesture_seconds: float) -> np.ndarray:
    """(n, 2) pixel offsets: real recorded paths of class `name` chained end to end, played over the
    gesture (about 25 recorded steps a second), scaled by a random factor."""
    pool = paths.get(name) or []
    if not pool:
        raise ValueError(f"no recorded fingertip paths of class {name!r}")
    chain_len = max(1, round(gesture_seconds * 25 / 15))
    pieces, at = [np.zeros((1, 2))], np.zeros(2)
    for _ in range(chain_len):
        p = pool[int(rng.integers(len(pool)))]
        pieces.append(p[1:] + at)
        at = at + p[-1]
    chain = np.concatenate(pieces)  # (1 + 15 * chain_len, 2) fractions of the frame
    steps = np.linspace(0, 1, len(chain))
    factor = float(rng.uniform(1.2, 2.2))
    xy = np.stack([np.interp(u, steps, chain[:, 0]) * w, np.interp(u, steps, chain[:, 1]) * h], axis=1)
    return xy * factor


def _other_path(n: int, rng: np.random.Generator, w: int, h: int, fps: float) -> np.ndarray:
    """(n, 2) pixel offsets of a hand that does not move purposefully: holding, wandering, fidgeting."""
    kind = rng.integers(3)
    if kind == 0:  # holds still (tremor and camera shake are added later)
        return np.zeros((n, 2))
    if kind == 1:  # wanders slowly
        return _smooth_noise(rng, n, fps * 1.5) * np.array([w, h]) * float(rng.uniform(0.02, 0.05))
    # fidgets: small quick moves
    return _smooth_noise(rng, n, fps * 0.2) * np.array([w, h]) * float(rng.uniform(0.01, 0.025))


# -- rendering -----------------------------------------------------------------------------------------
def render_gesture(name: str, seed: int = 0, *, fps: float = 25.0, seconds: float = 4.0,
                   size: tuple[int, int] = (320, 240), photos_root: str | os.PathLike | None = None,
                   fingertip_paths: dict[str, list[np.ndarray]] | None = None) -> list[np.ndarray]:
    """RGB uint8 frames of one clip of gesture `name` (one of GESTURE_CLASSES); `seed` makes it.

    fingertip_paths: `load_fingertip_paths()` (needed for TRAJECTORY_CLASSES; loaded when None).
    """
    import cv2

    if name not in GESTURE_CLASSES:
        raise ValueError(f"unknown gesture {name!r}; choose from {', '.join(GESTURE_CLASSES)}")
    rng = np.random.default_rng(seed)
    w, h = int(size[0]), int(size[1])
    n = max(2, round(fps * seconds))
    root = Path(photos_root) if photos_root else SIGN_DIGITS_DIR
    every = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if name == OTHER_CLASS:  # any pose; sometimes it changes once
        poses = [every[int(rng.integers(len(every)))] for _ in range(2)]
        switch = n + 1 if rng.random() < 0.5 else int(rng.integers(n // 4, 3 * n // 4))
    else:
        pointing = digit_photos(POINTING_DIGIT, photos_root)
        poses, switch = [pointing[int(rng.integers(len(pointing)))]], n + 1
    photos = [_load_rgb(p) for p in poses]
    masks = [_feather_mask(*ph.shape[:2]) for ph in photos]
    # the camera: a canvas larger than the frame, shaken by the hand holding it
    margin = 0.06
    big_w, big_h = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    background = _background(rng, (big_w, big_h), every)
    shake = _smooth_noise(rng, n, fps * float(rng.uniform(0.15, 0.5))) * np.array([w, h]) * float(
        rng.uniform(0.003, 0.015))
    shake = np.clip(shake, -margin * w * 0.9, margin * w * 0.9)
    tremor = _smooth_noise(rng, n, fps * 0.08) * h * float(rng.uniform(0.001, 0.004))
    # the path
    if name == OTHER_CLASS:
        offsets = _other_path(n, rng, w, h, fps)
    else:
        u, _, length = _progress(rng, n, fps, seconds)
        if name in DRAWN_CLASSES:
            offsets = _drawn_path(name, u, rng, w, h)
        else:
            paths = fingertip_paths if fingertip_paths is not None else load_fingertip_paths()
            offsets = _recorded_path(name, u, rng, w, h, paths, length)
    # the hand's size; a path too large for the frame is shrunk so the hand stays in view
    side0 = float(rng.uniform(0.5, 0.7)) * h
    lo, hi = offsets.min(axis=0), offsets.max(axis=0)
    room = np.maximum(np.array([w, h]) - 0.7 * side0, 0.2 * np.array([w, h]))
    fit = float(min(1.0, *(room / np.maximum(hi - lo, 1e-6))))
    offsets, lo, hi = offsets * fit, lo * fit, hi * fit
    # start so the whole path stays in the frame, off centre a little
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.08, 0.08, 2) * np.array([w, h])
    positions = offsets - (lo + hi) / 2 + centre + tremor
    # the hand: size and angle drift over the clip
    t = np.arange(n) / fps
    sides = side0 * (1 + float(rng.uniform(-0.12, 0.12)) * t / seconds
                     + float(rng.uniform(0, 0.06)) * np.sin(2 * np.pi * float(rng.uniform(0.1, 0.4)) * t
                                                            + float(rng.uniform(0, 2 * np.pi))))
    angles = (float(rng.uniform(-15, 15)) + float(rng.uniform(-12, 12)) * t / seconds
              + _smooth_noise(rng, n, fps * 0.7, 1)[:, 0] * float(rng.uniform(0.5, 3.0)))
    gain, offset = float(rng.uniform(0.7, 1.15)), float(rng.uniform(-15, 15))
    frames = []
    for i in range(n):
        idx = 0 if i < switch else len(photos) - 1
        photo, mask = photos[idx], masks[idx]
        ph, pw = photo.shape[:2]
        sx, sy = shake[i]
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), float(angles[i]), float(sides[i]) / max(ph, pw))
        m[0, 2] += positions[i, 0] + sx - pw / 2
        m[1, 2] += positions[i, 1] + sy - ph / 2
        sprite = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[:, :, None]
        x0, y0 = int(round(margin * w + sx)), int(round(margin * h + sy))
        back = background[y0:y0 + h, x0:x0 + w]
        frame = (back * (1 - alpha) + sprite.astype(np.float32) * alpha) * gain + offset
        frame += rng.normal(0, 2.0, frame.shape).astype(np.float32)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def make_gesture_dataset(root: str | os.PathLike, clips_per_class: int = 20, classes: Sequence[str] = DEFAULT_CLASSES, *,
                         fps: float = 25.0, seconds: float = 4.0, size: tuple[int, int] = (320, 240),
                         seed: int = 0, photos_root: str | os.PathLike | None = None,
                         fingertip_root: str | os.PathLike | None = None, fmt: str = "mp4") -> dict[str, list[Path]]:
    """Write root/<class>/<class>_<nn>.<fmt> clips (a labeled-directories hand-action data set).

    Existing files of the same name are not overwritten (the same arguments give the same clips: a
    folder can be reused as a cache); returns {class: [paths]}.
    """
    from ..features.video import write_video

    names = list(classes)
    unknown = [c for c in names if c not in GESTURE_CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {', '.join(GESTURE_CLASSES)}")
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    paths = load_fingertip_paths(fingertip_root) if any(c in TRAJECTORY_CLASSES for c in names) else None
    root = Path(root)
    out: dict[str, list[Path]] = {}
    for name in names:
        rng = np.random.default_rng([seed, GESTURE_CLASSES.index(name)])
        folder = name.replace(" ", "_")
        written = []
        for i in range(clips_per_class):
            clip_seed = int(rng.integers(0, 2**31 - 1))
            target = root / folder / f"{folder}_{i:02d}.{fmt.lstrip('.')}"
            if not target.exists():
                frames = render_gesture(name, clip_seed, fps=fps, seconds=seconds, size=size,
                                        photos_root=photos_root, fingertip_paths=paths)
                tmp = target.with_name(f".{target.stem}.part{target.suffix}")
                write_video(tmp, frames, fps)
                tmp.replace(target)
            written.append(target)
        out[name] = written
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the finger-gesture clips data set (`--help` lists the options)."""
    parser = argparse.ArgumentParser(description="Write finger-gesture clips: a real pointing hand moved along "
                                                 "drawn and real recorded fingertip paths")
    parser.add_argument("root", type=Path, help="output folder (one subfolder per class)")
    parser.add_argument("--clips-per-class", type=int, default=20)
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                        help=f"comma-separated, from: {', '.join(GESTURE_CLASSES)}")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fingertip-paths", type=Path, default=None,
                        help=f"the fingertip-trajectories folder (default: ${FINGERTIP_ENV} or shared/datasets)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    written = make_gesture_dataset(args.root, args.clips_per_class, [c.strip() for c in args.classes.split(",")],
                                   fps=args.fps, seconds=args.seconds, size=(w, h), seed=args.seed,
                                   fingertip_root=args.fingertip_paths)
    for name, paths in written.items():
        print(f"{name}: {len(paths)} clips")


if __name__ == "__main__":
    main()
