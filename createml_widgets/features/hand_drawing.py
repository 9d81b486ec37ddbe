"""Drawing a hand's keypoints (Vision's layout) on a picture: `draw_hand`."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from .hand_detector import NUM_JOINTS, HandObservation
from .image_io import load_image

if TYPE_CHECKING:
    from .image_io import ImageSource


def draw_hand(image: ImageSource, keypoints: np.ndarray | HandObservation | None, *,
              color: tuple[int, int, int] = (255, 64, 32), joint_color: tuple[int, int, int] = (255, 255, 255),
              width: int | None = None) -> Image.Image:
    """A copy of `image` with the hand's 21 joints and skeleton drawn on it.

    `keypoints`: (1, 3, 21), (3, 21) or (2, 21) in Vision's convention (normalised, origin lower-left),
    or a HandObservation. Joints whose confidence is 0 (and all-zero "no hand" arrays) are not drawn.
    """
    from ..nets.gcn import HAND_EDGES

    if isinstance(keypoints, HandObservation):
        keypoints = keypoints.keypoints
    canvas = load_image(image, max_side=None).copy()
    if keypoints is None:
        return canvas
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_JOINTS)
    if kp.shape[0] < 2:
        raise ValueError(f"keypoints must hold x and y rows for 21 joints; got shape {np.shape(keypoints)}")
    kp = kp[-3:] if kp.shape[0] > 3 else kp
    xs, ys = kp[0], kp[1]
    conf = kp[2] if kp.shape[0] >= 3 else np.ones(NUM_JOINTS)
    visible = (conf > 0) & ~((xs == 0) & (ys == 0)) & np.isfinite(xs) & np.isfinite(ys)
    w, h = canvas.size
    px = xs * (w - 1)
    py = (1.0 - ys) * (h - 1)
    lw = width or max(1, round(min(w, h) / 100))
    r = max(1.5, lw * 1.6)
    draw = ImageDraw.Draw(canvas)
    for i, j in HAND_EDGES:
        if visible[i] and visible[j]:
            draw.line([(px[i], py[i]), (px[j], py[j])], fill=tuple(color), width=lw)
    for k in range(NUM_JOINTS):
        if visible[k]:
            draw.ellipse([px[k] - r, py[k] - r, px[k] + r, py[k] + r], fill=tuple(joint_color),
                         outline=tuple(color))
    return canvas
