"""Uploads and names as a careless or hostile user gives them (issue 11 points 12, 14, 15, 18).

Each test drives the real widgets (DataSourcePicker, PredictionPreview with a real trained model) the
way the dashboard does: FileUpload values, typed folder names.
"""
from __future__ import annotations

import datetime
import io
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from createml_widgets import MLImageClassifier, samples
from createml_widgets.features.image_io import load_image
from createml_widgets.widgets import DataSourcePicker, PredictionPreview

DIGITS = samples.sign_language_digits()
NOW = datetime.datetime.now(datetime.UTC)


def _file(name: str, content: bytes, kind: str = "application/octet-stream") -> dict:
    return {"name": name, "type": kind, "size": len(content), "content": memoryview(content), "last_modified": NOW}


def _photos(label: str, n: int) -> list[Path]:
    return sorted((DIGITS / label).iterdir())[:n]


def _files_under(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    for label in ("0", "1"):
        (r / "digits" / label).mkdir(parents=True)
        for p in _photos(label, 3):
            shutil.copy(p, r / "digits" / label / p.name)
    return r


# -- point 12: N same-named zip members ----------------------------------------------------------
@pytest.mark.timeout(300)
def test_a_zip_of_20000_members_with_one_name_unpacks_in_seconds(root):
    buf = io.BytesIO()
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(tiny, "JPEG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about each duplicate name
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for _ in range(20_000):
                zf.writestr("hand/photo.jpg", tiny.getvalue())
    (root / "uploads" / "hand").mkdir(parents=True)
    (root / "uploads" / "hand" / "photo-7.jpg").write_bytes(b"the user's own")  # taken: never overwritten
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0, check_files=False)
    start = time.perf_counter()
    saved = picker.save_uploads([_file("same.zip", buf.getvalue(), "application/zip")])
    elapsed = time.perf_counter() - start
    assert len(saved) == len(set(saved)) == 20_000
    names = {p.name for p in (root / "uploads" / "hand").iterdir()}
    assert "photo.jpg" in names and "photo-20000.jpg" in names and len(names) == 20_001
    assert (root / "uploads" / "hand" / "photo-7.jpg").read_bytes() == b"the user's own"
    assert all(p.read_bytes() == tiny.getvalue() for p in saved[:50])
    # Before: every member tried -1, -2, … in turn (~25 min for 20,000). Linear now: a few seconds
    # of file creation; 60 s leaves room for a machine shared with other jobs.
    assert elapsed < 60, f"20,000 same-named members took {elapsed:.0f} s"


# -- point 18: a CRC failure mid-zip ------------------------------------------------------------
def _zip_with_bad_crc() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, p in enumerate(_photos("5", 3)):
            zf.writestr(f"five/{i}.jpg", p.read_bytes())
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        second = zf.getinfo("five/1.jpg")
    start = second.header_offset + 30 + len(second.filename) + len(second.extra)
    data[start + 200] ^= 0xFF  # one flipped byte in the second member: its CRC-32 no longer matches
    return bytes(data)


def test_a_zip_that_fails_its_crc_midway_leaves_nothing_and_says_so(root):
    before = _files_under(root)
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    picker.upload_label.value = "mine"
    picker.upload.value = (_file("five.zip", _zip_with_bad_crc(), "application/zip"),)
    message = picker.message.value
    assert "upload failed" in message and "CRC" in message and "nothing was saved" in message
    # Before: the first member stayed and a 0-byte file was left for the second, while the message
    # said nothing about either.
    assert _files_under(root) == before
    assert not (root / "uploads").exists() or not any((root / "uploads").rglob("*"))


def test_a_folder_the_user_had_keeps_its_files_when_an_upload_fails(root):
    (root / "uploads" / "mine").mkdir(parents=True)
    (root / "uploads" / "mine" / "keep.txt").write_text("mine")
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    with pytest.raises(ValueError, match="nothing was saved"):
        picker.save_uploads([_file("a.jpg", _photos("0", 1)[0].read_bytes()),
                             _file("five.zip", _zip_with_bad_crc())], label="mine")
    assert _files_under(root / "uploads") == {"mine/keep.txt": 4}


# -- point 18: truncated JPEGs in the picker's readability count ----------------------------------
def test_the_picker_counts_truncated_jpegs_as_training_does(tmp_path):
    data = tmp_path / "root" / "digits"
    for label in ("0", "1"):
        (data / label).mkdir(parents=True)
        for p in _photos(label, 10):
            shutil.copy(p, data / label / p.name)
    broken = []
    for label, cut in (("0", 0.5), ("0", 0.8), ("1", 0.3)):
        victim = sorted((data / label).iterdir())[len(broken)]
        raw = victim.read_bytes()
        victim.write_bytes(raw[: int(len(raw) * cut)])
        broken.append(victim)
    (data / "1" / "empty.jpg").write_bytes(b"")
    broken.append(data / "1" / "empty.jpg")
    skipped_by_training = set()
    for p in (q for q in data.rglob("*") if q.is_file()):
        try:
            load_image(p)
        except Exception:  # noqa: BLE001 - what feature extraction skips
            skipped_by_training.add(p)
    assert skipped_by_training == set(broken)
    picker = DataSourcePicker("image", root=tmp_path / "root", path="digits", thumbnails_per_class=0)
    # Before: Image.verify() passed the three truncated JPEGs, so only the empty file was counted.
    assert picker.analysis.unreadable == set(broken)
    assert "4 unreadable files will be skipped" in str(picker.problems)


# -- point 15: a 256+ character name typed into the picker ----------------------------------------
@pytest.mark.parametrize("typed", ["a" * 256, "digits/" + "b" * 300, "é" * 200])
def test_a_name_too_long_for_the_os_is_a_clear_message(root, typed):
    picker = DataSourcePicker("image", root=root, path="digits", thumbnails_per_class=0)
    picker.location.value = typed  # what typing into the folder box does; raised OSError before
    assert picker.path == "digits" and picker.location.value == "digits"
    message = picker.message.value
    assert "cmlw-picker-error" in message and "255 bytes" in message and str(root) not in message
    assert not picker.navigate(typed)


# -- point 14: a failed preview upload ----------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_root(tmp_path_factory):
    r = tmp_path_factory.mktemp("preview-root")
    for label in ("0", "1", "5"):
        (r / "digits" / label).mkdir(parents=True)
        for p in _photos(label, 6):
            shutil.copy(p, r / "digits" / label / p.name)
    IC = MLImageClassifier
    model = IC(IC.DataSource.labeled_directories(r / "digits"),
               IC.ModelParameters(max_iterations=10, validation=IC.ValidationData.none()))
    return model, r


@pytest.mark.parametrize("name,content,says", [
    ("notes.jpg", b"this is not a photo at all " * 40, "notes.jpg"),
    ("empty.png", b"", "empty"),
    ("half.jpg", _photos("1", 1)[0].read_bytes()[:600], "half.jpg"),
])
def test_a_failed_preview_upload_shows_the_error_and_clears_the_old_result(model_and_root, name, content, says):
    model, r = model_and_root
    preview = PredictionPreview(model, root=r)
    preview.upload.value = (_file("good.jpg", sorted((DIGITS / "5").iterdir())[15].read_bytes(), "image/jpeg"),)
    preview.wait(120)
    assert preview.results and preview.results[0][0] == "5" and "<img" in preview.picture.value
    preview.upload.value = (_file(name, content, "image/jpeg"),)
    preview.wait(120)
    # Before: nothing was said and the previous photo and its prediction stayed on screen.
    assert preview.results is None
    assert preview.picture.value == "" and preview.results_html.value == ""
    assert preview.error and says in preview.error
    assert "cmlw-preview-error" in preview.message.value and says in preview.message.value
