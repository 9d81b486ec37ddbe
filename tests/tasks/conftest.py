"""Hand-action clips made from the real photos (different motions and poses per class)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def action_clips(tmp_path_factory):
    """(train_root, test_root): 8 clips per class to train on, 3 unseen clips per class to test on."""
    from createml_widgets.samples.make_clips import make_dataset

    root = tmp_path_factory.mktemp("clips")
    make_dataset(root / "train", clips_per_class=8, seed=0)
    make_dataset(root / "test", clips_per_class=3, seed=1, formats=("mp4", "avi"))
    return root / "train", root / "test"
