"""Hand keypoints on photos of every size and format: where the time goes (issue 15 point 2).

For 100x100, 800x600, 1920x1080 and 4032x3024 photos in JPEG, PNG and HEIC (made from the bundled
sample photos: each resized to the canvas height and pasted in the middle of a canvas of the size, the
rest a flat background), one process, one HandKeypointDetector:

* photos/s and hands found with the detector as extraction uses it (full models, padded retry, lite
  fallback), and for a single plain MediaPipe pass (no retry, no fallback);
* the share of the time inside MediaPipe's graph (`Hands.process`), the rest being decoding, the retry
  geometry and Python around it; target >= 90% at every size;
* what the retry chain costs (passes after the first, their time) and what it finds (hands found only
  by a retry);
* decoding alone: the reduced decode detection uses now (`load_image_reduced(path, DETECTION_SIDE)`)
  against the full decode capped at 2048 px it used before (`load_image(path)`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import DIGITS, Context

SIZES = [(100, 100), (800, 600), (1920, 1080), (4032, 3024)]
FORMATS = ["JPEG", "PNG", "HEIC"]


class _TimedGraph:
    """A MediaPipe Hands graph that adds up the time spent in `process`."""

    def __init__(self, graph, clock: dict):
        self._graph, self._clock = graph, clock

    def process(self, rgb):
        start = time.perf_counter()
        try:
            return self._graph.process(rgb)
        finally:
            self._clock["seconds"] += time.perf_counter() - start
            self._clock["calls"] += 1

    def __getattr__(self, name):
        return getattr(self._graph, name)


def _timed_detector(clock: dict, **options):
    from createml_widgets.features.hand_keypoints import HandKeypointDetector

    detector = HandKeypointDetector(**options)
    detector._hands = _TimedGraph(detector._hands, clock)
    build = detector._build
    detector._build = lambda complexity: _TimedGraph(build(complexity), clock)
    return detector


def make_photos(folder: Path, size: tuple[int, int], fmt: str, count: int) -> list[Path]:
    from PIL import Image

    width, height = size
    sources = [p for label in sorted(DIGITS.iterdir()) if label.is_dir() for p in sorted(label.iterdir())[:3]]
    step = max(1, len(sources) // count)
    out = []
    for i, src in enumerate(sources[::step][:count]):
        photo = Image.open(src).convert("RGB")
        side = min(width, height)
        canvas = Image.new("RGB", size, (228, 226, 220))
        canvas.paste(photo.resize((side, side), Image.BICUBIC), ((width - side) // 2, (height - side) // 2))
        path = folder / f"{width}x{height}-{i}.{fmt.lower()}"
        if fmt == "HEIC":
            import pillow_heif

            # x265's fastest preset: its default took 1-2 min per 12 Mpx photo on the shared machine
            pillow_heif.from_pillow(canvas).save(path, quality=90, enc_params={"preset": "ultrafast"})
        elif fmt == "JPEG":
            canvas.save(path, "JPEG", quality=92)
        else:
            canvas.save(path, "PNG")
        out.append(path)
    return out


def _measure(paths: list[Path], old_decode: bool = False, **options) -> dict:
    """Detect every photo once; `old_decode`: with the decoding detection used before (full, capped at
    2048 px) in place of the reduced one, to compare in the same run."""
    from createml_widgets.features import hand_detector
    from createml_widgets.features.image_io import load_image

    clock = {"seconds": 0.0, "calls": 0}
    current = hand_detector._as_rgb_array
    if old_decode:
        hand_detector._as_rgb_array = lambda image: np.ascontiguousarray(np.asarray(load_image(image), dtype=np.uint8))
    try:
        with _timed_detector(clock, **options) as detector:
            detector.detect(paths[0])  # warm-up: graph start-up is not a per-photo cost
            clock.update(seconds=0.0, calls=0)
            found, retry_found = 0, 0
            start = time.perf_counter()
            for path in paths:
                before = clock["calls"]
                hand = detector.detect(path)
                found += hand is not None
                retry_found += hand is not None and clock["calls"] - before > 1
            total = time.perf_counter() - start
    finally:
        hand_detector._as_rgb_array = current
    return {"total": total, "inside": clock["seconds"], "calls": clock["calls"], "found": found,
            "retry_found": retry_found, "n": len(paths)}


def _decode_seconds(paths: list[Path], reduced: bool, rounds: int = 3) -> float:
    from createml_widgets.features.hand_keypoints import DETECTION_SIDE
    from createml_widgets.features.image_io import load_image, load_image_reduced

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for path in paths:
            image = load_image_reduced(path, DETECTION_SIDE) if reduced else load_image(path)
            np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        best = min(best, time.perf_counter() - start)
    return best / len(paths)


def decode_alternatives(paths: list[Path], fmt: str, rounds: int = 5) -> dict[str, float]:
    """Median ms per photo of other ways to decode a PNG or HEIC for detection, interleaved round by round
    with the library's (`load_image_reduced`): OpenCV's PNG decoder (full, then an area reduce to the same
    size; and its IMREAD_REDUCED_COLOR_2/4 flags), pillow-heif's decoder on 1, 2 and 4 threads."""
    import statistics

    from createml_widgets.features.hand_keypoints import DETECTION_SIDE
    from createml_widgets.features.image_io import load_image_reduced

    ways = {"library": lambda p: np.asarray(load_image_reduced(p, DETECTION_SIDE))}
    if fmt == "PNG":
        import cv2

        def cv_area(p):
            a = cv2.imread(str(p), cv2.IMREAD_COLOR)
            f = max(a.shape[:2]) // DETECTION_SIDE
            if f >= 2:
                a = cv2.resize(a, (a.shape[1] // f, a.shape[0] // f), interpolation=cv2.INTER_AREA)
            return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)

        ways["cv2 full + area reduce"] = cv_area
        ways["cv2 IMREAD_REDUCED_COLOR_2"] = lambda p: cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_2)
        ways["cv2 IMREAD_REDUCED_COLOR_4"] = lambda p: cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_4)
    elif fmt == "HEIC":
        import pillow_heif

        def heif(threads):
            def decode(p):
                old = pillow_heif.options.DECODE_THREADS
                pillow_heif.options.DECODE_THREADS = threads
                try:
                    return np.asarray(pillow_heif.open_heif(p))
                finally:
                    pillow_heif.options.DECODE_THREADS = old
            return decode

        for threads in (1, 2, 4):
            ways[f"pillow-heif, {threads} decode thread{'s' if threads > 1 else ''}"] = heif(threads)
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            for p in paths:
                way(p)
            times[name].append((time.perf_counter() - start) / len(paths) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def run(ctx: Context) -> None:
    area = "hand decode"
    try:
        import pillow_heif  # noqa: F401

        from createml_widgets.features.hand_keypoints import DETECTION_SIDE
    except ImportError as err:
        ctx.add(area, "skipped", f"missing: {err.name}")
        return
    count = 4 if ctx.quick else 12
    folder = ctx.scratch / "hand-decode"
    folder.mkdir(parents=True, exist_ok=True)
    ctx.log(f"{count} photos per size and format; detection decodes to >= {DETECTION_SIDE} px")
    for size in SIZES:
        for fmt in FORMATS:
            paths = make_photos(folder, size, fmt, count)
            name = f"{size[0]}x{size[1]} {fmt}"
            chain = _measure(paths)
            before = _measure(paths, old_decode=True)
            plain = _measure(paths, retry=False, fallback_complexity=None)
            share = chain["inside"] / chain["total"]
            ctx.add(area, f"{name}: photos/s before (full decode)", before["n"] / before["total"], "photos/s",
                    note=f"{before['found']}/{before['n']} hands; {before['inside'] / before['total']:.0%} in MediaPipe")
            extra_calls = chain["calls"] - chain["n"]
            ctx.add(area, f"{name}: photos/s (retry chain)", chain["n"] / chain["total"], "photos/s",
                    note=f"{chain['found']}/{chain['n']} hands; {chain['calls']} MediaPipe passes",
                    target=f">= 90% in MediaPipe: {share:.0%} {'met' if share >= 0.9 else 'NOT met'}")
            ctx.add(area, f"{name}: photos/s (one plain pass)", plain["n"] / plain["total"], "photos/s",
                    note=f"{plain['found']}/{plain['n']} hands; {plain['inside'] / plain['total']:.0%} in MediaPipe")
            ctx.add(area, f"{name}: retry chain", extra_calls, "extra passes",
                    note=f"{chain['total'] / max(plain['total'], 1e-9):.2f}x the plain pass's time; "
                         f"{chain['retry_found']} hands found only by a retry or the lite fallback")
            reduced, full = _decode_seconds(paths, True), _decode_seconds(paths, False)
            ctx.add(area, f"{name}: decode", reduced * 1000, "ms/photo",
                    note=f"reduced for detection; {full * 1000:.1f} ms decoding in full (capped at 2048 px), "
                         f"{full / max(reduced, 1e-9):.1f}x")
            if fmt != "JPEG" and size[0] >= 800:
                alt = decode_alternatives(paths, fmt, 3 if ctx.quick else 5)
                lib = alt.pop("library")
                ctx.add(area, f"{name}: other decoders", min(alt.values()) / lib, "x the library's time",
                        note=f"library {lib:.0f} ms; " + "; ".join(f"{k} {v:.0f} ms" for k, v in alt.items()))
            for p in paths:
                p.unlink()
