"""Camera and LivePreview from the kernel's side: the messages a browser sends, with real photos.

(The browser's side, with Chromium's fake camera, is tests/browser/test_camera.py.)
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from widget_helpers import DIGITS, copy_clips, files_under

from createml_widgets.widgets import Camera, DataSourcePicker, LivePreview
from createml_widgets.widgets.camera import ESM


def _jpeg(photo) -> bytes:
    out = io.BytesIO()
    Image.open(photo).convert("RGB").resize((320, 320)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _photo(label="5", index=0):
    return sorted((DIGITS / label).iterdir())[index]


def test_the_es_module_ships_with_the_package():
    text = ESM.read_text()
    assert "export default" in text and "getUserMedia" in text and "msg:custom" in text


def test_snapped_photos_land_under_their_label_and_the_counts_follow(tmp_path):
    picker = DataSourcePicker("hand_pose", root=tmp_path)
    camera = Camera("hand_pose", picker=picker, label="five")
    for i in range(3):
        camera._on_message(camera, {"type": "photo", "label": "five"}, [_jpeg(_photo("5", i))])
    camera._on_message(camera, {"type": "photo", "label": "one"}, [_jpeg(_photo("1"))])
    assert camera.message_level == "ok" and camera.message.startswith("saved uploads/one/one-"), camera.message
    assert picker.path == "uploads"
    assert picker.counts == {"five": 3, "one": 1}
    assert camera.counts == {"five": 3, "one": 1}
    assert len(camera.saved) == 4 and all(p.suffix == ".jpg" and p.is_file() for p in camera.saved)
    assert all(p.parent.parent == tmp_path / "uploads" for p in camera.saved)
    assert len({p.name for p in camera.saved}) == 4  # never one over another
    assert picker.data_source is not None  # two labels: ready to train


def test_a_label_cannot_leave_the_uploads_folder(tmp_path):
    camera = Camera("image", root=tmp_path)
    path = camera.save_photo(_jpeg(_photo()), "../../etc")
    assert path.resolve().is_relative_to((tmp_path / "uploads").resolve())
    assert path.parent.name == "etc" and not (tmp_path.parent / "etc").exists()


def test_what_is_not_a_photo_is_refused_and_nothing_is_written(tmp_path):
    camera = Camera("image", root=tmp_path, label="x")
    before = files_under(tmp_path)
    camera._on_message(camera, {"type": "photo", "label": "x"}, [b"not a jpeg at all"])
    assert camera.message_level == "failed" and "not saved" in camera.message
    camera._on_message(camera, {"type": "photo", "label": "  "}, [_jpeg(_photo())])
    assert "type a label first" in camera.message
    assert files_under(tmp_path) == before


def test_a_recorded_clip_is_saved_as_a_constant_rate_video(tmp_path):
    """Frames as a browser records them (JPEG, uneven times, ~24 a second) become a 30 fps MP4 of the
    same length, whose hands MediaPipe finds."""
    from createml_widgets.features.video import iter_frames, probe_video, video_keypoints

    clip = sorted(copy_clips(tmp_path / "src", labels=("wave",), per_label=1).rglob("*.mp4"))[0]
    rng = np.random.default_rng(0)
    frames, times = [], []
    for t, frame in iter_frames(clip, 24.0):
        out = io.BytesIO()
        Image.fromarray(frame).save(out, "JPEG", quality=85)
        frames.append(out.getvalue())
        times.append(100.0 + t + float(rng.uniform(-0.005, 0.005)))
    root = tmp_path / "root"
    root.mkdir()
    camera = Camera("hand_action", root=root, label="wave")
    assert camera.media == "video"
    camera._on_message(camera, {"type": "clip", "label": "wave", "times": times}, frames)
    assert camera.message_level == "ok", camera.message
    assert camera.counts == {"wave": 1}
    [saved] = camera.saved
    assert saved.suffix == ".mp4" and saved.parent == root / "uploads" / "wave"
    info = probe_video(saved)
    assert info.fps == 30.0 and abs(info.duration - (times[-1] - times[0])) < 0.1, info
    assert video_keypoints(saved, 30.0).hand_fraction > 0.9
    before = files_under(root)
    camera._on_message(camera, {"type": "clip", "label": "wave", "times": [1.0, 2.0]}, [b"garbage", b"more"])
    assert camera.message_level == "failed" and "not a readable JPEG" in camera.message
    camera._on_message(camera, {"type": "clip", "label": "wave", "times": [1.0]}, frames[:1])
    assert "at least two frames" in camera.message
    assert files_under(root) == before


def test_live_preview_answers_a_frame_with_the_label_and_the_skeleton(hand_pose_model):
    live = LivePreview(hand_pose_model)
    sent = []
    live.send = lambda content, buffers=None: sent.append(content)
    photo = _photo("5", 10)
    live._on_message(live, {"type": "start"}, [])
    live._on_message(live, {"type": "frame", "id": 7, "t": 12.5}, [_jpeg(photo)])
    [reply] = sent
    assert reply["type"] == "result" and reply["id"] == 7 and "error" not in reply, reply
    assert reply["label"] == hand_pose_model.prediction(photo)[0][0]
    kp = np.asarray(reply["keypoints"])
    assert kp.shape == (2, 21) and ((kp >= 0) & (kp <= 1)).all()
    assert reply["timestamp"] == 12.5 and live.frames == 1
    from createml_widgets.nets.gcn import HAND_EDGES

    assert live._edges == [list(e) for e in HAND_EDGES]  # the skeleton the browser draws


def test_live_preview_without_a_model_or_with_a_bad_frame_says_so(hand_pose_model):
    live = LivePreview()
    sent = []
    live.send = lambda content, buffers=None: sent.append(content)
    live._on_message(live, {"type": "frame", "id": 1, "t": 1.0}, [_jpeg(_photo())])
    assert "train a model first" in sent[-1]["error"]
    live.model = hand_pose_model
    live._on_message(live, {"type": "frame", "id": 2, "t": 2.0}, [b"garbage"])
    assert sent[-1]["id"] == 2 and "not a readable JPEG" in sent[-1]["error"]


@pytest.mark.parametrize("cls", [Camera, LivePreview])
def test_the_widgets_start_with_the_camera_off(cls, tmp_path):
    w = cls(root=tmp_path) if cls is Camera else cls()
    assert w.camera_state == "off" and w.mirror is True


def test_the_app_offers_the_camera_beside_folders_and_a_live_tab(tmp_path, hand_pose_model):
    from createml_widgets.widgets import TrainerApp

    app = TrainerApp("hand_pose", root=tmp_path)
    tabs = app.data_tabs
    assert tabs.titles == ("Folders & uploads", "Camera") and tabs.children[0] is app.picker
    assert app.camera is None  # made when its tab is opened
    tabs.selected_index = 1
    assert tabs.children[1].children == (app.camera,) and isinstance(app.camera, Camera)
    assert app.camera.picker is app.picker and app.camera.media == "image"
    assert app.preview_tabs.titles == ("File", "Live") and app.live is None
    app.camera.save_photo(_jpeg(_photo("5")), "five")
    assert app.picker.path == "uploads" and app.picker.counts == {"five": 1}
    app.progress.model = hand_pose_model  # what a finished training does
    app.preview_tabs.selected_index = 1
    assert app.preview_tabs.children[1].children == (app.live,) and app.live.model is hand_pose_model
    app.task = "hand_action"  # a new task: a camera recording clips, a live preview without a model
    assert app.camera is None and app.live is None
    assert app.open_camera().media == "video" and app.open_live().model is None
