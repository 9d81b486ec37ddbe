"""Hand keypoints in Vision's layout, from real MediaPipe on the real sample photos."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from createml_widgets.errors import NoHandDetectedError, UnreadableFileError
from createml_widgets.features import hand_keypoints as hk
from createml_widgets.features import process_pool
from createml_widgets.features.hand_keypoints import (
    HandKeypointDetector,
    HandObservation,
    draw_hand,
    extract_image_keypoints,
    keypoints_array,
)

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"
TIPS = [8, 12, 16, 20]  # index, middle, ring, little fingertips
WRIST = 0


def _photos(label: str) -> list[Path]:
    return sorted((DIGITS / label).glob("*.JPG"))


def test_vision_layout_on_an_upright_open_hand(image_detector, open_hand_photo):
    obs = image_detector.detect(open_hand_photo)
    assert isinstance(obs, HandObservation)
    kp = obs.keypoints
    assert kp.shape == (1, 3, 21) and kp.dtype == np.float32
    assert np.all((kp[0, :2] >= 0) & (kp[0, :2] <= 1))
    # origin lower-left: fingers pointing up have LARGER y than the wrist
    y = kp[0, 1]
    assert np.all(y[TIPS] > y[WRIST] + 0.2), y
    # tips above their own knuckles (MCP joints 5, 9, 13, 17) too
    assert np.all(y[TIPS] > y[[5, 9, 13, 17]])
    # confidence row = the hand's score
    assert 0.5 < obs.confidence <= 1.0
    assert np.allclose(kp[0, 2], obs.confidence)
    assert obs.chirality in ("left", "right")


def test_coordinates_are_mediapipe_with_y_flipped(open_hand_photo):
    from mediapipe.python.solutions import hands as mp_hands

    rgb = np.asarray(Image.open(open_hand_photo).convert("RGB"))
    with mp_hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1) as raw:
        res = raw.process(rgb)
    assert res.multi_hand_landmarks, "MediaPipe finds this hand without any retry"
    lm = np.array([(p.x, p.y) for p in res.multi_hand_landmarks[0].landmark])
    with HandKeypointDetector(retry=False) as det:  # the photo as it is (a small photo is first tried bordered)
        kp = det.detect(rgb).keypoints[0]
    assert np.allclose(kp[0], np.clip(lm[:, 0], 0, 1), atol=1e-5)
    assert np.allclose(kp[1], np.clip(1 - lm[:, 1], 0, 1), atol=1e-5)


def test_upside_down_photo_inverts_the_relation(image_detector, open_hand_photo):
    upright = image_detector.detect(open_hand_photo)
    flipped = image_detector.detect(ImageOps.flip(Image.open(open_hand_photo)))
    assert flipped is not None
    y = flipped.keypoints[0, 1]
    assert np.all(y[TIPS] < y[WRIST] - 0.2), y
    # same hand, mirrored vertically: x unchanged, y -> 1 - y
    expected = np.stack([upright.keypoints[0, 0], 1 - upright.keypoints[0, 1]])
    assert np.abs(flipped.keypoints[0, :2] - expected).mean() < 0.05


def test_left_right_mirror_swaps_chirality(image_detector, open_hand_photo):
    photo = Image.open(open_hand_photo)
    a = image_detector.detect(photo)
    b = image_detector.detect(ImageOps.mirror(photo))
    assert {a.chirality, b.chirality} == {"left", "right"}
    assert np.abs(b.keypoints[0, 0] - (1 - a.keypoints[0, 0])).mean() < 0.05
    with HandKeypointDetector(mirrored=True) as selfie:
        assert selfie.detect(photo).chirality == b.chirality


def test_blank_and_noise_images_have_no_hand(image_detector):
    rng = np.random.default_rng(0)
    assert image_detector.detect(np.full((240, 320, 3), 128, np.uint8)) is None
    assert image_detector.detect(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)) is None
    with pytest.raises(NoHandDetectedError, match="no hand"):
        image_detector.require(np.zeros((100, 100, 3), np.uint8), name="black.png")


def test_detect_accepts_paths_pil_and_arrays(image_detector, open_hand_photo):
    a = image_detector.detect(open_hand_photo)
    b = image_detector.detect(str(open_hand_photo))
    c = image_detector.detect(Image.open(open_hand_photo))
    d = image_detector.detect(np.asarray(Image.open(open_hand_photo).convert("RGB")))
    for other in (b, c, d):
        assert np.allclose(a.keypoints, other.keypoints, atol=1e-6)
    with pytest.raises(UnreadableFileError, match="missing.jpg"):
        image_detector.detect(open_hand_photo.parent / "missing.jpg")


def test_padded_retry_maps_back_to_the_original_image(open_hand_photo):
    """A hand found only after upscaling + padding must land where the hand is in the original image."""
    photo = Image.open(open_hand_photo).convert("RGB")
    with HandKeypointDetector(fallback_complexity=None) as det:
        direct = det.detect(photo)
        prepared, mapping = hk._retry_geometry(np.asarray(photo))
        assert prepared.shape[0] > photo.size[1] * 2  # upscaled and padded
        via_retry = det._process(det._hands, prepared, mapping)
    assert via_retry, "the padded image shows the hand too"
    assert np.abs(via_retry[0].keypoints[0, :2] - direct.keypoints[0, :2]).max() < 0.06


def test_detection_rate_on_the_200_sample_photos(all_sample_photos):
    assert len(all_sample_photos) == 200
    seen = []
    results = extract_image_keypoints(all_sample_photos, workers=2, progress=lambda d, t: seen.append((d, t)))
    found = [r for r in results if isinstance(r, HandObservation)]
    assert len(found) / len(results) >= 0.9
    assert not any(isinstance(r, Exception) for r in results)
    for r in found:
        assert r.keypoints.shape == (1, 3, 21) and r.keypoints.dtype == np.float32
        assert np.all((r.keypoints >= 0) & (r.keypoints <= 1))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 200 and all(t == 200 for _, t in seen)


def test_parallel_equals_serial_in_order_with_bad_files(all_sample_photos, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    sources = [str(p) for p in all_sample_photos[::5]]  # 40 photos, every class
    sources.insert(7, str(corrupt))
    sources.insert(20, str(empty))
    sources.append(str(tmp_path / "missing.jpg"))
    serial = extract_image_keypoints(sources, workers=1)
    parallel = extract_image_keypoints(sources, workers=2)
    assert len(serial) == len(parallel) == len(sources) == 43
    for i, (a, b) in enumerate(zip(serial, parallel)):
        assert type(a) is type(b), (i, a, b)
        if isinstance(a, HandObservation):
            assert np.allclose(a.keypoints, b.keypoints, atol=1e-6)
            assert a.chirality == b.chirality
    for slot, name in ((7, "corrupt.jpg"), (20, "empty.png"), (42, "missing.jpg")):
        assert isinstance(parallel[slot], UnreadableFileError)
        assert name in str(parallel[slot]) and parallel[slot].path.name == name
    assert sum(isinstance(r, HandObservation) for r in parallel) >= 36
    assert not multiprocessing.active_children()


def test_workers_1_runs_in_process(monkeypatch, all_sample_photos):
    def no_pool(*a, **k):
        raise AssertionError("workers=1 must not start a process pool")

    monkeypatch.setattr(process_pool, "ProcessPoolExecutor", no_pool)  # the pool's module: where it is looked up
    out = extract_image_keypoints(all_sample_photos[:3], workers=1)
    assert len(out) == 3 and all(isinstance(r, HandObservation) for r in out)
    with pytest.raises(ValueError, match="workers"):
        extract_image_keypoints(all_sample_photos[:1], workers=0)


def test_in_memory_images_mixed_with_paths(all_sample_photos):
    paths = [str(p) for p in all_sample_photos[100:140]]
    sources = list(paths)
    sources[3] = Image.open(paths[3])
    sources[10] = np.asarray(Image.open(paths[10]).convert("RGB"))
    out = extract_image_keypoints(sources, workers=2)
    ref = extract_image_keypoints([paths[3], paths[10]], workers=1)
    for got, want in ((out[3], ref[0]), (out[10], ref[1])):
        assert type(got) is type(want)
        if want is not None:
            assert np.allclose(got.keypoints, want.keypoints, atol=1e-6)
    stacked = keypoints_array(out)
    assert stacked.shape == (40, 1, 3, 21)


def test_draw_hand_uses_vision_coordinates():
    canvas = Image.new("RGB", (100, 200), (40, 40, 40))
    kp = np.zeros((1, 3, 21), np.float32)
    kp[0, 0, :] = np.linspace(0.2, 0.8, 21)
    kp[0, 1, :] = 0.9  # near the TOP of the picture (origin lower-left)
    kp[0, 2, :] = 1.0
    out = draw_hand(canvas, kp, color=(255, 0, 0), joint_color=(0, 255, 0))
    arr = np.asarray(out)
    assert out.size == canvas.size and canvas.getpixel((50, 20)) == (40, 40, 40)  # the input is untouched
    drawn_rows = np.nonzero((arr != 40).any(axis=(1, 2)))[0]
    assert drawn_rows.min() >= 10 and drawn_rows.max() <= 30  # row (1 - 0.9) * 199 = 20
    assert tuple(arr[20, int(0.5 * 99)]) != (40, 40, 40)
    # no hand (zeros) draws nothing; a HandObservation works as well
    assert np.array_equal(np.asarray(draw_hand(canvas, np.zeros((1, 3, 21)))), np.asarray(canvas))
    obs = HandObservation(keypoints=kp, chirality="left", confidence=1.0)
    assert np.array_equal(np.asarray(draw_hand(canvas, obs, color=(255, 0, 0), joint_color=(0, 255, 0))), arr)


def test_draw_hand_on_a_detected_photo(image_detector, open_hand_photo):
    obs = image_detector.detect(open_hand_photo)
    picture = draw_hand(open_hand_photo, obs.keypoints, joint_color=(0, 255, 0), color=(0, 255, 0))
    arr = np.asarray(picture).astype(int)
    w, h = picture.size
    x, y = obs.keypoints[0, 0, 12], obs.keypoints[0, 1, 12]  # middle fingertip
    px, py = round(x * (w - 1)), round((1 - y) * (h - 1))
    patch = arr[max(0, py - 1):py + 2, max(0, px - 1):px + 2]
    assert (patch[..., 1] > 200).any() and (patch[..., 0] < 60).any()


def test_retry_after_upscaling_and_padding_finds_hands_that_fill_the_photo():
    """The sample photos are 100 x 100 with the hand filling them: MediaPipe alone misses many, the
    upscaled, padded retry finds them (measured on all 200: 170 without, 195 with)."""
    sample = _photos("1") + _photos("2")
    found = {}
    for retry in (False, True):
        with HandKeypointDetector(fallback_complexity=None, retry=retry) as det:
            found[retry] = [det.detect(p) is not None for p in sample]
    assert sum(found[True]) >= sum(found[False]) + 5, found
    assert all(b for a, b in zip(found[False], found[True]) if a)  # the retry never loses a hand


def test_two_hands_most_confident_first_with_chirality(image_detector):
    """Two real hands side by side (a right hand and the mirror image of another): both are found,
    most confident first, one left and one right; `detect` keeps the most confident one."""
    left_photo = Image.open(_photos("5")[0]).convert("RGB").resize((240, 240))
    right_photo = ImageOps.mirror(Image.open(_photos("5")[3]).convert("RGB").resize((240, 240)))
    both = Image.new("RGB", (560, 300), (200, 200, 200))
    both.paste(left_photo, (20, 30))
    both.paste(right_photo, (300, 30))
    hands = image_detector.detect_all(both)
    assert len(hands) == 2
    assert hands[0].confidence >= hands[1].confidence
    assert {h.chirality for h in hands} == {"left", "right"}
    wrist_x = sorted(float(h.keypoints[0, 0, WRIST]) for h in hands)
    assert wrist_x[0] < 0.5 < wrist_x[1]  # one hand in each half of the picture
    best = image_detector.detect(both)
    assert np.array_equal(best.keypoints, hands[0].keypoints) and best.chirality == hands[0].chirality
