"""Fixtures for the hand keypoint and video tests: real photos from the bundled sample, real MediaPipe."""
from __future__ import annotations

from pathlib import Path

import pytest

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"


def photos(label: str) -> list[Path]:
    return sorted((DIGITS / label).glob("*.JPG"))


@pytest.fixture(scope="session")
def open_hand_photo() -> Path:
    """Digit 5: an upright open hand, palm to the camera, every finger pointing up."""
    return photos("5")[0]


@pytest.fixture(scope="session")
def all_sample_photos() -> list[Path]:
    return sorted(DIGITS.glob("*/*.JPG"))


@pytest.fixture(scope="session")
def image_detector():
    from createml_widgets.features.hand_keypoints import HandKeypointDetector

    with HandKeypointDetector(video=False) as det:
        yield det
