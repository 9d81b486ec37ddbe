"""The retry geometries of a photo where no hand was found: upscaled, padded, rotated, brightened copies
whose landmarks map back onto the original photo."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import photos
from PIL import Image

from createml_widgets.features import hand_detector
from createml_widgets.features import hand_keypoints as hk


@pytest.mark.parametrize("geometry", [(256, 0.25, 0.0, False), (384, 0.1, 0.0, False), (256, 0.25, 30.0, False),
                                      (256, 0.25, -30.0, True), (100, 0.0, 15.0, False)])
def test_mapping_undoes_the_geometry(geometry):
    import cv2

    rgb = np.zeros((80, 120, 3), np.uint8)
    rgb[20:30, 70:90] = 255  # a white block: find it in the prepared image, map it back
    prepared, mapping = hk._retry_geometry(rgb, *geometry)
    short, pad, angle, _ = geometry
    assert min(prepared.shape[:2]) >= min(short, 80)
    grey = cv2.cvtColor(prepared, cv2.COLOR_RGB2GRAY) > 128
    ys, xs = np.nonzero(grey)
    centre = np.array([[xs.mean() / prepared.shape[1], ys.mean() / prepared.shape[0]]])
    back = mapping(centre)[0]
    assert back == pytest.approx([80 / 120, 25 / 80], abs=0.02)


def test_a_rotated_retry_finds_the_same_hand_in_original_coordinates(open_hand_photo):
    rgb = np.asarray(Image.open(open_hand_photo).convert("RGB"))
    with hk.HandKeypointDetector(video=False, fallback_complexity=None) as det:
        [direct] = det._process(det._hands, rgb, None)
        prepared, mapping = hk._retry_geometry(rgb, 256, 0.25, 30.0, False)
        [rotated] = det._process(det._hands, prepared, mapping)
    err = np.abs(direct.keypoints[0, :2] - rotated.keypoints[0, :2]).max()
    assert err < 0.06, err


def test_the_retry_chain_is_configurable_and_runs_in_order(monkeypatch):
    small = np.asarray(Image.open(photos("5")[0]).convert("RGB").resize((64, 64), Image.BILINEAR))
    seen = []
    real = hk._retry_geometry

    def spy(rgb, *geometry):
        seen.append(geometry)
        return real(rgb, *geometry)

    monkeypatch.setattr(hand_detector, "_retry_geometry", spy)  # the detector's module: where it is looked up
    blank = np.full((64, 64, 3), 128, np.uint8)
    chain = ((256, 0.25, 0.0, False), (256, 0.25, 30.0, False))
    first = [hk.SMALL_PHOTO_GEOMETRY]  # a photo under 256 px: the bordered geometry, then as it is, then the chain
    with hk.HandKeypointDetector(video=False, fallback_complexity=None, retries=chain) as det:
        assert det.detect(blank) is None
        assert seen == first + list(chain)
        seen.clear()
        assert det.detect(small) is not None
        assert seen == first  # found with the border: nothing more is tried
    with hk.HandKeypointDetector(video=False, fallback_complexity=None) as det:
        seen.clear()
        det.detect(blank)
        assert seen == first + list(hk.RETRY_GEOMETRIES)
        seen.clear()
        assert det.detect(np.full((256, 300, 3), 128, np.uint8)) is None
        assert seen == list(hk.RETRY_GEOMETRIES)  # not small: as it is first, no small-photo pass
    with hk.HandKeypointDetector(video=False, fallback_complexity=None, retry=False) as det:
        seen.clear()
        det.detect(blank)
        assert seen == []


def test_the_small_photo_border_finds_the_hand_where_it_is_in_the_photo(open_hand_photo):
    """The small-photo pass answers in the photo's own normalised coordinates (the border mapped back)."""
    rgb = np.asarray(Image.open(open_hand_photo).convert("RGB"))
    assert min(rgb.shape[:2]) < hk.RETRY_SHORT_SIDE
    with hk.HandKeypointDetector(video=False, fallback_complexity=None, retry=False) as det:
        [plain] = det._process(det._hands, rgb, None)
    with hk.HandKeypointDetector(video=False, fallback_complexity=None) as det:
        bordered = det.detect(rgb)
    err = np.abs(plain.keypoints[0, :2] - bordered.keypoints[0, :2]).max()
    assert err < 0.06, err


def test_a_small_photo_s_views_are_the_same_hand_in_the_other_borders(monkeypatch):
    """views=True: after the hand is found, SMALL_PHOTO_VIEWS run in order on the full models, and each view
    is that hand (in the photo's own coordinates); a large photo, or views=False, gets none."""
    rgb = np.asarray(Image.open(photos("5")[0]).convert("RGB"))
    assert min(rgb.shape[:2]) < hk.RETRY_SHORT_SIDE
    seen = []
    real = hk._retry_geometry

    def spy(image, *geometry):
        seen.append(geometry)
        return real(image, *geometry)

    monkeypatch.setattr(hand_detector, "_retry_geometry", spy)
    with hk.HandKeypointDetector(video=False, views=True) as det:
        obs = det.detect(rgb)
        assert seen == [hk.SMALL_PHOTO_GEOMETRY, *hk.SMALL_PHOTO_VIEWS]
        assert len(obs.views) == len(hk.SMALL_PHOTO_VIEWS) == 2
        stacked = obs.all_views()
        assert stacked.shape == (3, 3, 21) and stacked.dtype == np.float32
        np.testing.assert_array_equal(stacked[0], obs.keypoints[0])
        for view in obs.views:
            assert view.shape == (1, 3, 21)
            assert np.abs(view[0, :2] - obs.keypoints[0, :2]).mean() < 0.05  # the same hand, placed alike
            assert not np.array_equal(view, obs.keypoints)  # but another detection
        seen.clear()
        large = np.asarray(Image.fromarray(rgb).resize((300, 300), Image.BICUBIC))
        big = det.detect(large)
        assert big is not None and big.views == () and big.all_views().shape == (1, 3, 21)
        assert not set(seen) & set(hk.SMALL_PHOTO_VIEWS)
    with hk.HandKeypointDetector(video=False) as det:
        plain = det.detect(rgb)
    assert plain.views == ()
    np.testing.assert_array_equal(plain.keypoints, obs.keypoints)  # views do not change the first answer
