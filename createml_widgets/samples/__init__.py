"""Small real datasets shipped with the package, for demos, the dashboard and tests."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent


def sign_language_digits() -> Path:
    """200 photos (100x100) of ASL digits 0-9, 20 per class, one folder per label (Apache-2.0)."""
    return ROOT / "sign-language-digits"


def hand_action_clips() -> Path:
    """Short clips made from the sign-language photos, one folder per action label."""
    return ROOT / "hand-action-clips"
