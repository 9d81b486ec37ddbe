"""The training-side image resize (`image_embedding.resize_square`) against the tent matrices the exported
ONNX graph and .mlpackage compute with (`tent_matrix`): the same bilinear weights, down- and upscaling,
square and not, including grids that fall outside the picture (where a tap weighs 0)."""
from __future__ import annotations

import numpy as np
import pytest

from createml_widgets.features.image_embedding import crop_grid, resize_square, tent_matrix


def dense(chw: np.ndarray, size: int) -> np.ndarray:
    _, h, w = chw.shape
    side = min(h, w)
    ry = tent_matrix(crop_grid(h, side, size), h).astype(np.float32)
    rx = tent_matrix(crop_grid(w, side, size), w).astype(np.float32)
    return np.matmul(np.matmul(ry, chw.astype(np.float32)), rx.T)


@pytest.mark.parametrize("shape", [(3, 299, 299), (3, 299, 400), (3, 533, 299), (3, 360, 360),
                                   (3, 100, 100), (3, 50, 80), (1, 2, 3), (3, 480, 640)])
@pytest.mark.parametrize("size", [224, 240])
def test_two_taps_are_the_tent_matrices(shape, size):
    rng = np.random.default_rng(sum(shape) + size)
    chw = rng.random(shape, dtype=np.float32)
    got = resize_square(chw, size)
    assert got.shape == (shape[0], size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got, dense(chw, size), atol=1e-6)


def test_an_upscaled_edge_keeps_the_tent_s_partial_weight():
    """Upscaling puts the first samples left of pixel 0: the tent gives them weight < 1 (no pixel -1)."""
    grid = crop_grid(2, 2, 224)
    assert grid[0] < 0
    flat = np.ones((1, 2, 2), np.float32)
    got = resize_square(flat, 224)
    assert got[0, 0, 0] < 1.0 and got[0, 112, 112] == pytest.approx(1.0)
    np.testing.assert_allclose(got, dense(flat, 224), atol=1e-6)
