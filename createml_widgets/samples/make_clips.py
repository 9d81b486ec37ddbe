"""Hand-action test clips made from REAL hand photos (the bundled sign-language-digits sample).

Each clip composes one or more 100x100 photos of a hand onto a neutral, blurred background and moves,
rotates, scales them or switches between poses over time with OpenCV, so MediaPipe finds a real hand
in (almost) every frame while each action class has its own motion:

=============  ===============  ==========================================================
class          photos (digit)   motion
=============  ===============  ==========================================================
``wave``       5 (open hand)    translates left-right (sinusoid), tilting a little
``count_up``   1 -> 2 -> 3      holds each pose a third of the clip, drifting slightly
``rotate``     0                rotates steadily (90-180 degrees per second, either way)
``zoom``       4                scales up and down (about 0.45x-0.85x the frame height)
``hold``       any              stays almost still (a "background"/idle class; not in the default set)
=============  ===============  ==========================================================

Every clip draws its own photos, speed, phase, position, size and background tint from `seed`, so
clips of one class differ. Regenerate the bundled sample with::

    python -m createml_widgets.samples.make_clips createml_widgets/samples/hand-action-clips
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..features.hand_detector import HandKeypointDetector

SIGN_DIGITS_DIR = Path(__file__).resolve().parent / "sign-language-digits"
HAND_ACTION_CLIPS_DIR = Path(__file__).resolve().parent / "hand-action-clips"
BASE_SIDE = (0.55, 0.72)  # photo side as a fraction of the frame height
MOTIONS = ("wave", "count_up", "rotate", "zoom", "hold")
# class name -> (digit folders of the photos used, in order; motion)
ACTION_CLASSES: dict[str, tuple[tuple[str, ...], str]] = {
    "wave": (("5",), "wave"),
    "count_up": (("1", "2", "3"), "count_up"),
    "rotate": (("0",), "rotate"),
    "zoom": (("4",), "zoom"),
}


def _load_rgb(path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _feather_mask(h: int, w: int, fraction: float = 0.12) -> np.ndarray:
    """1 inside, fading to 0 over `fraction` of the side at the borders (so pasted photos blend in)."""
    ramp_y = np.clip(np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / max(1.0, fraction * h), 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / max(1.0, fraction * w), 0, 1)
    m = np.outer(ramp_y, ramp_x)
    return (m * m * (3 - 2 * m)).astype(np.float32)  # smoothstep


def _background(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A neutral canvas: the photo's own colours blown up and blurred, mixed with a tinted grey gradient."""
    import cv2

    w, h = size
    big = cv2.resize(photo, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    big = cv2.GaussianBlur(big, (0, 0), sigmaX=max(w, h) / 8)
    grey = float(rng.uniform(110, 190))
    tint = rng.uniform(-18, 18, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    grad = ((xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)) * rng.uniform(20, 50)
    neutral = grey + tint[None, None, :] + grad[:, :, None]
    mix = float(rng.uniform(0.3, 0.6))
    return np.clip(mix * big + (1 - mix) * neutral, 0, 255).astype(np.float32)


def _motion_params(motion: str, n_photos: int, rng: np.random.Generator, size, seconds: float):
    """A function t -> (photo index, centre x, centre y, side in px, angle in degrees)."""
    w, h = size
    base = float(rng.uniform(*BASE_SIDE)) * h  # photo side in pixels
    cx0 = w / 2 + rng.uniform(-0.08, 0.08) * w
    cy0 = h / 2 + rng.uniform(-0.06, 0.06) * h
    tilt0 = float(rng.uniform(-12, 12))
    phase = float(rng.uniform(0, 2 * math.pi))
    if motion == "wave":
        amp = float(rng.uniform(0.17, 0.26)) * w
        freq = float(rng.uniform(0.7, 1.5))
        tilt_amp = float(rng.uniform(4, 12))

        def at(t):
            s = math.sin(2 * math.pi * freq * t + phase)
            return 0, cx0 + amp * s, cy0 + 0.03 * h * math.cos(4 * math.pi * freq * t), base, tilt0 + tilt_amp * s
    elif motion == "count_up":
        drift = rng.uniform(-0.12, 0.12, size=2) * np.array([w, h])
        cuts = np.cumsum(rng.uniform(0.85, 1.15, size=max(1, n_photos)))
        cuts = cuts / cuts[-1] * seconds

        def at(t):
            idx = int(np.searchsorted(cuts, t, side="right"))
            u = t / seconds
            return (min(idx, n_photos - 1), cx0 + drift[0] * (u - 0.5), cy0 + drift[1] * (u - 0.5), base,
                    tilt0 + 3 * math.sin(2 * math.pi * u + phase))
    elif motion == "rotate":
        speed = float(rng.uniform(90, 180)) * (1 if rng.random() < 0.5 else -1)
        start = float(rng.uniform(-30, 30))
        side = base * 0.9

        def at(t):
            return 0, cx0, cy0, side, start + speed * t
    elif motion == "zoom":
        lo, hi = float(rng.uniform(0.42, 0.5)) * h, float(rng.uniform(0.78, 0.88)) * h
        freq = float(rng.uniform(0.5, 1.0))

        def at(t):
            s = 0.5 + 0.5 * math.sin(2 * math.pi * freq * t + phase)
            return 0, cx0, cy0, lo + (hi - lo) * s, tilt0
    elif motion == "hold":
        def at(t):
            return (0, cx0 + 2 * math.sin(3 * t + phase), cy0 + 2 * math.cos(2 * t + phase), base,
                    tilt0 + math.sin(t + phase))
    else:
        raise ValueError(f"unknown motion {motion!r}; use one of {', '.join(MOTIONS)}")
    return at


def render_frames(images: Sequence, motion: str, fps: float = 30, seconds: float = 2.0,
                  size: tuple[int, int] = (320, 240), seed: int = 0) -> list[np.ndarray]:
    """The RGB uint8 frames `make_clip` writes (see there)."""
    import cv2

    if not images:
        raise ValueError("make_clip needs at least one photo")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; use one of {', '.join(MOTIONS)}")
    rng = np.random.default_rng(seed)
    photos = [_load_rgb(p) if not isinstance(p, np.ndarray) else np.asarray(p, dtype=np.uint8) for p in images]
    if motion != "count_up":
        photos = photos[:1]
    w, h = int(size[0]), int(size[1])
    background = _background(photos[0], (w, h), rng)
    gain = float(rng.uniform(0.9, 1.1))
    offset = float(rng.uniform(-10, 10))
    masks = [_feather_mask(*ph.shape[:2]) for ph in photos]
    at = _motion_params(motion, len(photos), rng, (w, h), seconds)
    n = max(1, round(fps * seconds))
    frames = []
    for i in range(n):
        idx, cx, cy, side, angle = at(i / fps)
        photo, mask = photos[idx], masks[idx]
        ph, pw = photo.shape[:2]
        scale = side / max(ph, pw)
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
        m[0, 2] += cx - pw / 2
        m[1, 2] += cy - ph / 2
        sprite = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[:, :, None]
        frame = background * (1 - alpha) + (sprite.astype(np.float32) * gain + offset) * alpha
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def make_clip(images: list[Path], path: str | os.PathLike, motion: str, fps: float = 30, seconds: float = 2.0,
              size: tuple[int, int] = (320, 240), seed: int = 0) -> Path:
    """Write a clip of real hand photos moving with `motion` to `path` (codec chosen by its suffix).

    images: photo paths (or RGB arrays); "count_up" shows them in order, splitting the clip into roughly
    equal parts, every other motion uses the first. motion: one of MOTIONS. size: (width, height).
    Returns the path written.
    """
    from ..features.video import write_video

    frames = render_frames(images, motion, fps=fps, seconds=seconds, size=size, seed=seed)
    return write_video(path, frames, fps)


def digit_photos(digit: str, photos_root: str | os.PathLike | None = None) -> list[Path]:
    """The photos of sign-language `digit`, sorted (from `photos_root`, else the bundled set)."""
    root = Path(photos_root) if photos_root else SIGN_DIGITS_DIR
    folder = root / str(digit)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no photos in {folder}")
    return files


def hand_fraction_of_frames(frames: Sequence[np.ndarray], detector: HandKeypointDetector | None = None) -> float:
    """Share of `frames` (consecutive RGB frames) where MediaPipe's tracking mode finds a hand."""
    from ..features.hand_keypoints import HandKeypointDetector

    own = detector is None
    det = detector if detector is not None else HandKeypointDetector(video=True)
    try:
        det.reset()
        found = sum(det.detect(f) is not None for f in frames)
    finally:
        if own:
            det.close()
    return found / max(1, len(frames))


def make_dataset(root: str | os.PathLike, clips_per_class: int = 6, formats: Sequence[str] = ("mp4",), fps: float = 30,
                 seconds: float = 2.0, size: tuple[int, int] = (320, 240), seed: int = 0,
                 classes: Sequence[str] | None = None, photos_root: str | os.PathLike | None = None,
                 min_hand_fraction: float | None = None, max_attempts: int = 5) -> dict[str, list[Path]]:
    """Write a labeled-directories hand-action dataset: root/<class>/<class>_<nn>.<format>.

    Each clip of a class uses different photos of its digits (drawn without repetition while there are
    enough), its own random speed/phase/offset/size/background, and the i-th clip the format
    formats[i % len(formats)]. With `min_hand_fraction` (e.g. 0.9) every written clip is read back
    through `video_keypoints` and re-drawn with other photos (up to `max_attempts`, keeping the best)
    when fewer of its frames show a detectable hand — a few sample photos defeat MediaPipe once
    encoded. Returns {class: [paths]}.
    """
    root = Path(root)
    names = list(classes) if classes is not None else list(ACTION_CLASSES)
    unknown = [c for c in names if c not in ACTION_CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {', '.join(ACTION_CLASSES)}")
    if clips_per_class < 1 or not formats:
        raise ValueError("clips_per_class must be at least 1 and formats not empty")
    from ..features.video import video_keypoints, write_video

    detector = None
    if min_hand_fraction:
        from ..features.hand_keypoints import HandKeypointDetector

        detector = HandKeypointDetector(video=True)
    out: dict[str, list[Path]] = {}
    try:
        for ci, name in enumerate(names):
            digits, motion = ACTION_CLASSES[name]
            rng = np.random.default_rng([seed, ci])
            pools = {d: digit_photos(d, photos_root) for d in digits}
            orders = {d: rng.permutation(len(pools[d])) for d in digits}
            paths = []
            for i in range(clips_per_class):
                clip_seed = int(rng.integers(0, 2**31 - 1))
                fmt = str(formats[i % len(formats)]).lstrip(".")
                target = root / name / f"{name}_{i:02d}.{fmt}"
                best, best_fraction, written = None, -1.0, None
                for attempt in range(max(1, max_attempts) if detector is not None else 1):
                    k = i + attempt * clips_per_class
                    photos = [pools[d][orders[d][k % len(pools[d])]] for d in digits]
                    frames = render_frames(photos, motion, fps=fps, seconds=seconds, size=size, seed=clip_seed)
                    write_video(target, frames, fps)
                    written = frames
                    if detector is None:
                        break
                    # Check the encoded file: compression can hide a hand the raw frames show.
                    fraction = video_keypoints(target, detector=detector).hand_fraction
                    if fraction > best_fraction:
                        best, best_fraction = frames, fraction
                    if fraction >= min_hand_fraction:
                        break
                if best is not None and best is not written:
                    write_video(target, best, fps)
                paths.append(target)
            out[name] = paths
    finally:
        if detector is not None:
            detector.close()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the hand-action clips data set (`--help` lists the options)."""
    parser = argparse.ArgumentParser(description="Write hand-action clips made from the sign-language-digits photos")
    parser.add_argument("root", type=Path, help="output folder (one subfolder per class)")
    parser.add_argument("--clips-per-class", type=int, default=6)
    parser.add_argument("--formats", default="mp4", help="comma-separated suffixes, e.g. mp4,avi,webm")
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-hand-fraction", type=float, default=0.9,
                        help="re-draw photos for clips where MediaPipe finds fewer hands (0: no check)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    written = make_dataset(args.root, args.clips_per_class, tuple(args.formats.split(",")), args.fps, args.seconds,
                           (w, h), args.seed, min_hand_fraction=args.min_hand_fraction or None)
    for name, paths in written.items():
        print(f"{name}: {len(paths)} clips")


if __name__ == "__main__":
    main()
