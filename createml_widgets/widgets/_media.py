"""Small pictures for the widgets: thumbnails of images, video frames and hand skeletons, as HTML."""
from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..display import image_to_data_uri

if TYPE_CHECKING:
    from ..features.hand_detector import HandKeypointDetector
    from ..features.image_io import ImageSource

log = logging.getLogger(__name__)

_detector_lock = threading.RLock()  # re-entrant: with_hand() holds it while hand_detector() takes it again
_detector = None


def hand_detector() -> HandKeypointDetector:
    """One shared MediaPipe hand detector (photos), created on first use."""
    global _detector
    with _detector_lock:
        if _detector is None:
            from ..features.hand_keypoints import HandKeypointDetector

            _detector = HandKeypointDetector()
        return _detector


def release_hand_detector() -> None:
    """Close the shared detector (its MediaPipe graphs); the next `hand_detector()` builds a new one."""
    global _detector
    with _detector_lock:
        detector, _detector = _detector, None
    if detector is not None:
        detector.close()


def load_picture(source: ImageSource, max_side: int = 640) -> Image.Image:
    """`source` as an upright RGB picture, its longer side at most `max_side`."""
    from ..features.image_io import load_image

    return load_image(source, max_side=max_side)


def with_hand(image: Image.Image) -> tuple[Image.Image, object | None]:
    """`image` with the detected hand's skeleton drawn on it, and the observation (None: no hand)."""
    from ..features.hand_keypoints import draw_hand

    with _detector_lock:
        observation = hand_detector().detect(np.asarray(image.convert("RGB")))
    if observation is None:
        return image, None
    return draw_hand(image, observation.keypoints), observation


def video_frames(path: str | os.PathLike, count: int = 3, max_side: int = 320) -> list[tuple[float, Image.Image]]:
    """`count` frames spread over a video, as (seconds, image)."""
    from ..features.video import iter_frames, probe_video

    info = probe_video(path)
    duration = max(info.duration, 1e-3)
    rate = max(count / duration, 0.05)
    frames = []
    for t, frame in iter_frames(path, target_frame_rate=rate, max_side=max_side):
        frames.append((t, Image.fromarray(frame)))
        if len(frames) >= count:
            break
    return frames


def video_frame_at(path: str | os.PathLike, seconds: float, max_side: int = 320) -> Image.Image | None:
    """The frame of a video at `seconds` (None past its end)."""
    from ..features.video import iter_frames

    frame = next(iter_frames(str(path), target_frame_rate=30.0, start=max(0.0, float(seconds)),
                             max_side=max_side), None)
    return None if frame is None else Image.fromarray(frame[1])


def thumbnail_uri(source: ImageSource, max_side: int = 96, hand: bool = False) -> str:
    """A data: URI of `source` shrunk to `max_side` (with the hand's skeleton drawn when `hand`)."""
    image = source if isinstance(source, Image.Image) else load_picture(source, max_side=max(max_side * 4, 256))
    if hand:
        image, _ = with_hand(image)
    return image_to_data_uri(image, max_side=max_side)


def figure_html(uri: str, caption: str = "", title: str = "", size: int = 96, css: str = "cmlw-thumb") -> str:
    """An inline <figure> of the picture at `uri`, `size` px, with `caption` under it and `title` as tooltip."""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f"<figure class='{css}' title='{html.escape(title)}' style='display:inline-block;margin:2px 4px;"
            f"text-align:center;font-size:11px;color:#444;vertical-align:top'>"
            f"<img src='{uri}' style='max-width:{size}px;max-height:{size}px;border-radius:4px;"
            f"border:1px solid #ddd'/>{cap}</figure>")


def placeholder_html(text: str, size: int = 96) -> str:
    """A grey dashed `size` px box holding `text`, in place of a picture that cannot be shown."""
    return (f"<figure class='cmlw-thumb cmlw-thumb-missing' style='display:inline-block;margin:2px 4px;"
            f"width:{size}px;height:{size}px;background:#f2f2f2;border:1px dashed #bbb;border-radius:4px;"
            f"font-size:11px;color:#777;text-align:center;vertical-align:top;overflow:hidden'>"
            f"{html.escape(text)}</figure>")


def media_thumbnails(path: Path, media: str, hand: bool, size: int = 96, frames: int = 3) -> list[str]:
    """HTML figures for one example file: one picture (images) or a few frames (videos)."""
    try:
        if media == "video":
            return [figure_html(thumbnail_uri(img, size, hand=hand), f"{t:.1f}s", str(path.name), size)
                    for t, img in video_frames(path, count=frames)]
        return [figure_html(thumbnail_uri(path, size, hand=hand), "", path.name, size)]
    except Exception as err:  # noqa: BLE001 - a thumbnail must never break the widget
        log.debug("no thumbnail for %s: %s", path, err)
        return [placeholder_html(f"cannot read {path.name}", size)]


def bars_html(results: Iterable[tuple[str, float]], top: int = 10, css: str = "cmlw-prediction-bars") -> str:
    """Labels with confidence bars, most confident first. `results`: [(label, confidence)]."""
    rows = []
    for i, (label, conf) in enumerate(list(results)[:top]):
        pct = max(0.0, min(1.0, float(conf))) * 100
        color = "#0071e3" if i == 0 else "#8fb8e8"
        weight = "700" if i == 0 else "400"
        rows.append(
            f"<div class='cmlw-bar-row' style='display:flex;align-items:center;gap:8px;margin:2px 0'>"
            f"<span class='cmlw-bar-label' style='min-width:90px;font-weight:{weight}'>{html.escape(str(label))}</span>"
            f"<span style='flex:0 0 220px;background:#eee;border-radius:3px;height:12px;position:relative'>"
            f"<span style='position:absolute;left:0;top:0;bottom:0;width:{pct:.1f}%;background:{color};"
            f"border-radius:3px'></span></span><span class='cmlw-bar-value'>{pct:.1f}%</span></div>")
    return f"<div class='{css}'>{''.join(rows)}</div>"
