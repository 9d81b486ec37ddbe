"""Helpers for the widget tests: copies of the real sample data."""
from __future__ import annotations

import shutil
from pathlib import Path

from createml_widgets import samples

DIGITS = samples.sign_language_digits()
CLIPS = samples.hand_action_clips()


def copy_photos(dest: Path, labels=("0", "1", "5"), per_label: int = 6, start: int = 0,
                layout: str = "folders") -> Path:
    """Copy real sample photos into `dest`: one folder per label, or `label.N.jpg` files."""
    dest.mkdir(parents=True, exist_ok=True)
    for label in labels:
        photos = sorted((DIGITS / str(label)).iterdir())[start:start + per_label]
        if layout == "folders":
            (dest / str(label)).mkdir(exist_ok=True)
            for photo in photos:
                shutil.copy(photo, dest / str(label) / photo.name)
        else:
            for i, photo in enumerate(photos):
                shutil.copy(photo, dest / f"{label}.{i}{photo.suffix.lower()}")
    return dest


def copy_clips(dest: Path, labels=("wave", "zoom"), per_label: int = 3) -> Path:
    for label in labels:
        (dest / label).mkdir(parents=True, exist_ok=True)
        for clip in sorted((CLIPS / label).glob("*.mp4"))[:per_label]:
            shutil.copy(clip, dest / label / clip.name)
    return dest


def files_under(folder: Path) -> set[str]:
    """Every path below `folder` (links not followed), relative, for before/after comparisons."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


CLIP_RANGES = ((0, 1), ("00:01", "00:02"))  # each 2 s sample clip gives two examples (seconds, mm:ss)


def annotate_clips(dest: Path, labels=("wave", "zoom"), per_label: int = 3) -> Path:
    """Real sample clips copied flat into `dest` with `actions.csv` (video, action, start_time,
    end_time): two labelled time ranges per clip, as Create ML's annotated video layout has them."""
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in labels:
        for clip in sorted((CLIPS / label).glob("*.mp4"))[:per_label]:
            shutil.copy(clip, dest / clip.name)
            rows += [f"{clip.name},{label},{start},{end}" for start, end in CLIP_RANGES]
    (dest / "actions.csv").write_text("video,action,start_time,end_time\n" + "\n".join(rows) + "\n")
    return dest


def click(widget) -> tuple[dict, list[bytes]]:
    """What the browser's click does: a custom 'download' message arrives on the widget's comm; returns
    the answer the widget sends back (only the comm's send is replaced, to keep what goes out)."""
    sent = []
    comm = widget.comm
    real = comm.send
    comm.send = lambda data=None, buffers=None, **_kw: sent.append((data, [bytes(b) for b in buffers or []]))
    try:
        widget._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "download"}}},
                            "buffers": []})
    finally:
        comm.send = real
    (data, buffers), = sent
    assert data["method"] == "custom"
    return data["content"], buffers
