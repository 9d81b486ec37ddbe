"""PredictionPreview with real models: files picked under the root (never outside it), uploads, the
hand skeleton on photos, and one prediction per window along a video's timeline."""
from __future__ import annotations

import datetime
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from widget_helpers import DIGITS, copy_clips, copy_photos, files_under

from createml_widgets import MLHandActionClassifier
from createml_widgets.display import image_to_data_uri
from createml_widgets.errors import NoHandDetectedError
from createml_widgets.widgets import PredictionPreview
from createml_widgets.widgets._paths import PathOutsideRootError

NOW = datetime.datetime.now(datetime.UTC)


def upload(widget: PredictionPreview, name: str, content: bytes, kind: str = "image/jpeg") -> None:
    widget.upload.value = ({"name": name, "type": kind, "size": len(content), "content": memoryview(content),
                            "last_modified": NOW},)


def img_sources(html: str) -> list[str]:
    return re.findall(r"<img src='([^']+)'", html)


@pytest.fixture()
def tree(image_root, tmp_path):
    """The model's data root plus, outside it, a secret photo; links to it inside the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    shutil.copy(sorted((DIGITS / "1").iterdir())[10], secret)
    root = tmp_path / "root"
    shutil.copytree(image_root / "digits", root / "digits")
    os.symlink(secret, root / "digits" / "1" / "link.jpg")
    os.symlink(outside, root / "escape")
    return root, secret


def test_predicts_a_file_under_the_root(image_model, image_root):
    preview = PredictionPreview(image_model, root=image_root)
    assert preview.task.key == "image" and not preview.predict_button.disabled
    assert len(preview.path_input.options) == 18
    # the model trained on all 18: none is offered by default (it would score ~100%), a hint says why
    assert preview.path_input.value == "" and "was used to train this model" in preview.message.value
    photo = sorted((image_root / "digits" / "1").iterdir())[0]
    ranked = preview.predict(f"digits/1/{photo.name}")
    expected = image_model.prediction_probabilities(photo)
    assert [label for label, _ in ranked] == sorted(expected, key=expected.get, reverse=True)
    assert [c for _, c in ranked] == pytest.approx(sorted(expected.values(), reverse=True), abs=1e-5)
    assert preview.results == ranked and ranked[0][0] == image_model.prediction(photo) == "1"
    top = re.search(r"cmlw-preview-top[^>]*>([^<]+) <span[^>]*>([\d.]+)%", preview.results_html.value)
    assert top.group(1) == "1" and float(top.group(2)) == pytest.approx(ranked[0][1] * 100, abs=0.05)
    assert preview.results_html.value.count("cmlw-bar-row") == 3
    assert img_sources(preview.picture.value) == [image_to_data_uri(Image.open(photo).convert("RGB"), 320)]
    # The 100 px photo is shown 320 px wide, and the flex box it sits in cannot squeeze it.
    assert Image.open(photo).size == (100, 100)
    assert "width='320' height='320' style='width:320px;height:320px;max-width:none" in preview.picture.value
    assert preview.picture.layout.flex == "0 0 auto" and preview.results_html.layout.min_width == "0"
    assert not preview.busy and preview.error == "" and "cmlw-preview-error" not in preview.message.value
    absolute = preview.predict(str(photo))  # an absolute path inside the root is fine
    assert absolute == ranked


def test_the_default_file_is_one_the_model_did_not_train_on(image_model, image_root, tmp_path):
    """A training photo scores ~100%: the file box offers a photo the model has not seen, from the data
    folder picked (a validation example first), and chooses again when the data or the model changes."""
    from createml_widgets import MLImageClassifier as IC
    from createml_widgets import MLSplitStrategy

    root = tmp_path / "root"
    shutil.copytree(image_root / "digits", root / "digits")  # copies of what image_model trained on
    copy_photos(root / "mine", labels=("0", "5"), per_label=4, start=10)  # a student's own, never seen
    preview = PredictionPreview(image_model, root=root)
    assert preview.trained_on() == {p.resolve() for p in (image_root / "digits").rglob("*.JPG")}
    assert preview.path_input.value.startswith("mine/"), preview.path_input.value  # not a copy in digits/
    preview.show_data_folder("digits")  # the data source changes: nothing there is new to the model
    assert preview.path_input.value.startswith("mine/"), preview.path_input.value
    chosen = "mine/5/" + sorted(p.name for p in (root / "mine" / "5").iterdir())[-1]
    preview.path_input.value = chosen
    preview.show_data_folder("mine")  # a file the user chose stays
    assert preview.path_input.value == chosen

    # A model trained on mine/ with half held out: the default is a held-out photo of mine/.
    model = IC(IC.DataSource.labeled_directories(root / "mine"),
               IC.ModelParameters(max_iterations=3, validation=IC.ValidationData.split(MLSplitStrategy.fixed(0.5, seed=0))))
    assert model.validation_metrics.is_valid
    fresh = PredictionPreview(model, root=root)
    fresh.show_data_folder("mine")
    picked = (root / fresh.path_input.value).resolve()
    assert fresh.path_input.value.startswith("mine/") and picked not in fresh.trained_on()
    assert picked in {Path(p).resolve() for p in model.validation_metrics.examples["Path"]}
    preview.model = model  # the model changes: the box's default is chosen again
    assert (root / preview.path_input.value).resolve() not in preview.trained_on()


def test_the_file_box_names_the_file_predicted(image_model, image_root, tmp_path):
    preview = PredictionPreview(image_model, root=image_root)
    first = preview.path_input.value
    photo = sorted((image_root / "digits" / "5").iterdir())[2]
    assert first != f"digits/5/{photo.name}"
    preview.predict(f"digits/5/{photo.name}")
    assert preview.path_input.value == f"digits/5/{photo.name}"
    other = sorted((image_root / "digits" / "0").iterdir())[1]
    preview.predict(str(other))  # an absolute path inside the root is shown relative to it
    assert preview.path_input.value == f"digits/0/{other.name}"
    assert "cmlw-preview-path" in preview.path_input._dom_classes  # the class the browser test uses
    outside = copy_photos(tmp_path / "elsewhere", labels=("1",), per_label=1)
    stranger = next((outside / "1").iterdir())
    with pytest.raises(PathOutsideRootError):  # refused: the box still names what was asked for
        preview.predict(str(stranger))
    assert preview.path_input.value == str(stranger) and preview.results is None


def test_messages_name_paths_inside_the_root_not_on_the_server(image_model, tmp_path):
    root = copy_photos(tmp_path / "data", labels=("0",), per_label=1)
    (root / "0" / "broken.jpg").write_bytes(b"no picture here")
    preview = PredictionPreview(image_model, root=root)
    with pytest.raises(Exception, match=re.escape(str(root))):  # the library's message is left as it is
        preview.predict("0/broken.jpg")
    assert str(root) in preview.error
    assert "cmlw-preview-error" in preview.message.value and "0/broken.jpg" in preview.message.value
    assert str(root) not in preview.message.value and str(tmp_path) not in preview.message.value
    with pytest.raises(FileNotFoundError):
        preview.predict(str(root / "0" / "missing.jpg"))
    assert "0/missing.jpg" in preview.message.value and str(root) not in preview.message.value


def test_the_predict_button_runs_in_the_background(image_model, image_root):
    preview = PredictionPreview(image_model, root=image_root)
    photo = sorted((image_root / "digits" / "5").iterdir())[1]
    preview.path_input.value = f"digits/5/{photo.name}"
    preview.predict_button.click()
    preview.wait(120)
    assert preview.results[0][0] == "5" and not preview.busy
    preview.path_input.value = ""
    preview.predict_button.click()
    assert "Choose a file first" in preview.message.value


@pytest.mark.parametrize("hostile", ["../outside/secret.jpg", "digits/1/link.jpg", "escape/secret.jpg",
                                     "digits/../../outside/secret.jpg", "SECRET", "..\\outside\\secret.jpg"])
def test_files_outside_the_root_are_refused(image_model, tree, hostile):
    root, secret = tree
    hostile = str(secret) if hostile == "SECRET" else hostile
    preview = PredictionPreview(image_model, root=root)
    assert "digits/1/link.jpg" not in preview.path_input.options and len(preview.path_input.options) == 18
    preview.predict("digits/0/" + sorted(os.listdir(root / "digits" / "0"))[0])
    assert preview.results is not None
    with pytest.raises(PathOutsideRootError):
        preview.predict(hostile)
    assert preview.results is None and preview.picture.value == "" and preview.results_html.value == ""
    assert "PathOutsideRootError" in preview.error and "cmlw-preview-error" in preview.message.value
    if not os.path.isabs(hostile):  # where a link leads is never told (what was typed may be echoed)
        assert str(secret.parent) not in preview.message.value


def test_missing_and_unreadable_files(image_model, tmp_path):
    copy_photos(tmp_path, labels=("0",), per_label=1)
    (tmp_path / "0" / "broken.jpg").write_bytes(b"no picture here")
    preview = PredictionPreview(image_model, root=tmp_path)
    with pytest.raises(FileNotFoundError):
        preview.predict("0/missing.jpg")
    with pytest.raises(Exception):  # noqa: B017 - whatever the decoder raises, it is shown
        preview.predict("0/broken.jpg")
    assert preview.results is None and preview.error and "cmlw-preview-error" in preview.message.value


def test_upload_with_a_path_like_name_is_predicted_and_never_saved(image_model, tree):
    root, secret = tree
    before = files_under(root.parent)
    preview = PredictionPreview(image_model, root=root)
    data = sorted((DIGITS / "0").iterdir())[15].read_bytes()
    upload(preview, "../../../evil.jpg", data)
    preview.wait(120)
    assert preview.results[0][0] == "0"
    # the button keeps the file's (sanitised) name and size, so its label counts "Upload (1)"; never its bytes
    (kept,) = preview.upload.value
    assert "/" not in kept["name"] and kept["size"] == len(data) and bytes(kept["content"]) == b""
    assert files_under(root.parent) == before  # nothing written, inside or outside the root
    # a second upload is predicted too
    first = preview.results
    upload(preview, "five.jpg", sorted((DIGITS / "5").iterdir())[15].read_bytes())
    preview.wait(120)
    assert preview.results is not first and preview.upload.value[0]["name"] == "five.jpg"


def test_without_a_model(image_root, image_model):
    preview = PredictionPreview(root=image_root)
    assert preview.predict_button.disabled and "Train a model first" in preview.message.value
    with pytest.raises(RuntimeError):
        preview.predict("digits/0/x.jpg")
    upload(preview, "x.jpg", b"whatever")
    assert "Train a model first" in preview.message.value
    preview.model = image_model
    assert not preview.predict_button.disabled and "Train a model first" not in preview.message.value
    assert "was used to train this model" in preview.message.value  # image_root holds only its training photos


# -- hand pose -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_hand_pose_draws_the_skeleton_and_says_when_there_is_no_hand(hand_pose_model, tmp_path):
    root = copy_photos(tmp_path / "photos", labels=("5",), per_label=1, start=12)
    photo = next((root / "5").iterdir())
    preview = PredictionPreview(hand_pose_model, root=tmp_path)
    assert preview.task.key == "hand_pose"
    ranked = preview.predict(f"photos/5/{photo.name}")
    assert [label for label, _ in ranked] == [label for label, _ in hand_pose_model.prediction(photo)]
    assert sum(c for _, c in ranked) == pytest.approx(1.0, abs=1e-4)
    caption = re.search(r"<div class='cmlw-preview-caption'[^>]*>([^<]+)</div>", preview.picture.value).group(1)
    assert caption.startswith(photo.name) and caption.endswith(" hand")  # e.g. "IMG_1.JPG · right hand"
    plain = image_to_data_uri(Image.open(photo).convert("RGB"), 320)
    assert img_sources(preview.picture.value) != [plain]  # the skeleton is drawn on it

    blank = Image.fromarray(np.full((240, 240, 3), 235, dtype=np.uint8))  # a real photo of nothing
    blank.save(tmp_path / "photos" / "wall.png")
    with pytest.raises(NoHandDetectedError, match=re.escape(str(tmp_path))):  # the library names the file
        preview.predict("photos/wall.png")
    assert preview.results is None and "No hand found" in preview.message.value
    # … but the page names it inside the data folder, not where the server keeps it.
    assert "no hand was detected in photos/wall.png" in preview.message.value
    assert str(tmp_path) not in preview.message.value and preview.path_input.value == "photos/wall.png"
    assert "no hand found" in preview.picture.value and preview.results_html.value == ""

    # An upload of it: the message names the file the student uploaded, not "<PIL image>".
    buf = io.BytesIO()
    blank.save(buf, "PNG")
    upload(preview, "my wall.png", buf.getvalue(), "image/png")
    preview.wait(60)
    assert "my wall.png" in preview.message.value and "PIL" not in preview.message.value, preview.message.value


# -- hand action ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hand_action_model(tmp_path_factory):
    root = copy_clips(tmp_path_factory.mktemp("hand-action") / "clips")
    HA = MLHandActionClassifier
    return HA(HA.DataSource.labeled_directories(root),
              HA.ModelParameters(maximum_iterations=5, prediction_window_size=15, validation=HA.ValidationData.none()))


@pytest.mark.slow
def test_hand_action_shows_one_prediction_per_window_on_a_timeline(hand_action_model, tmp_path):
    clips = copy_clips(tmp_path / "v", labels=("wave",), per_label=1)
    clip = next((clips / "wave").iterdir())
    preview = PredictionPreview(hand_action_model, root=tmp_path)
    assert preview.upload.accept.startswith("video/")
    predictions = preview.predict(f"v/wave/{clip.name}")
    expected = hand_action_model.prediction(clip)
    assert [p.frame_range for p in predictions] == [p.frame_range for p in expected] and len(expected) >= 2
    timeline = preview.timeline.value
    windows = re.findall(r"<div class='cmlw-timeline-window' title='frames (\d+)–(\d+): ([^ ]+) (\d+)%'", timeline)
    assert [(int(a), int(b) + 1) for a, b, _, _ in windows] == [(p.frame_range.start, p.frame_range.stop)
                                                               for p in expected]
    assert [label for _, _, label, _ in windows] == [p.label for p in expected]
    assert len(img_sources(timeline)) == min(len(expected), 6)  # a frame (with its skeleton) per window
    assert f"Whole video ({len(expected)} windows)" in preview.results_html.value

    before = files_under(tmp_path)
    upload(preview, "../../clip.mp4", clip.read_bytes(), "video/mp4")
    preview.wait(120)
    assert [p.frame_range for p in preview.results] == [p.frame_range for p in expected]
    assert files_under(tmp_path) == before
