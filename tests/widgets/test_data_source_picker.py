"""DataSourcePicker: browsing inside its root only, layout detection, counts, thumbnails, problems, uploads.

Every hostile path a user could type, click or upload is tried against a real folder tree with links
pointing outside the root; the tree outside is compared before and after so a write would show.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import shutil
import zipfile

import pytest
from PIL import Image
from widget_helpers import CLIP_RANGES, DIGITS, copy_clips, copy_photos, files_under

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier, samples
from createml_widgets.data.annotations import parse_time
from createml_widgets.widgets import DataSourcePicker
from createml_widgets.widgets._media import thumbnail_uri, video_frames, with_hand
from createml_widgets.widgets._paths import PathOutsideRootError, hide_root, sanitize_filename
from createml_widgets.widgets.data_source_picker import MAX_UPLOAD_BYTES, MAX_ZIP_MEMBERS

IC = MLImageClassifier
NOW = datetime.datetime.now(datetime.UTC)


def photo_bytes(label: str = "0", index: int = 0) -> bytes:
    return sorted((DIGITS / label).iterdir())[index].read_bytes()


def img_sources(html: str) -> list[str]:
    return re.findall(r"<img src='([^']+)'", html)


@pytest.fixture()
def tree(tmp_path):
    """root/ with data/{0,1,5} (3 real photos each), a link to a folder outside, a link to a photo
    outside, a link to a folder inside, a link loop, a dangling link and a unicode folder; outside/
    holds a secret photo that must never be shown or written near."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    copy_photos(root / "data", per_label=3)
    (outside / "secret").mkdir(parents=True)
    shutil.copy(sorted((DIGITS / "9").iterdir())[0], outside / "secret" / "secret.jpg")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret" / "secret.jpg", root / "escape.jpg")
    os.symlink(root / "data", root / "inside_link")
    os.symlink(root / "loop", root / "loop")
    os.symlink(tmp_path / "missing", root / "dangling")
    copy_photos(root / "日本語 データ", labels=("0", "1"), per_label=2)
    return root, outside


# -- the bundled sample ------------------------------------------------------------------------
def test_starts_in_the_bundled_sample_ready_to_train():
    picker = DataSourcePicker("image")
    assert picker.root == samples.ROOT.resolve()
    assert picker.path == "sign-language-digits" and picker.location.value == "sign-language-digits"
    assert picker.detected_layout == "labeled_directories"
    assert picker.counts == {str(d): 20 for d in range(10)}
    assert picker.problems == [] and picker.ready
    assert picker.data_source == IC.DataSource.labeled_directories(samples.sign_language_digits().resolve())
    assert len(img_sources(picker.classes_html.value)) == 10 * 3  # three thumbnails per label
    assert "ready to train" in picker.summary.value and "200 images" in picker.summary.value


# -- browsing --------------------------------------------------------------------------------------
def test_browsing_by_list_text_box_and_up_button(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    assert picker.path == ""  # the sample is not under this root
    offered = [value for _label, value in picker.folders.options]
    assert offered == ["data", "inside_link", "日本語 データ"]  # no link leading out, no loop, no dangling link
    assert picker.detected_layout == "labeled_directories" and not picker.ready  # root: labels data, escape…

    picker.folders.value = "data"  # a click in the list
    assert picker.path == "data" and picker.location.value == "data"
    assert picker.counts == {"0": 3, "1": 3, "5": 3} and picker.ready
    picker.up_button.click()
    assert picker.path == ""
    picker.location.value = "data/1"  # typed
    assert picker.path == "data/1" and picker.detected_layout == "labeled_files"
    picker.go_up()
    assert picker.path == "data"
    picker.go_up()
    picker.folders.value = "inside_link"  # a link to a folder inside the root opens its real place
    assert picker.path == "data" and picker.ready


HOSTILE = [
    "..", "../outside", "../outside/secret", "data/../..", "data/..", "./../", "data/0/../../..",
    "data\\..\\..", "..\\outside", "/etc", "/", "C:\\Windows", "C:", "\\\\server\\share", "//server/share",
    "escape", "escape/secret", "escape/../root", "loop", "dangling", "escape.jpg", "data/\x00", "~", "%2e%2e",
    "data/0/IMG_missing",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_paths_never_leave_the_root(tree, hostile):
    root, outside = tree
    picker = DataSourcePicker("image", root=root, path="data", thumbnails_per_class=0)
    before = picker.analysis
    assert picker.navigate(hostile) is False
    assert picker.path == "data" and picker.location.value == "data" and picker.analysis is before
    assert "cmlw-picker-error" in picker.message.value
    assert str(outside) not in picker.message.value  # the message names what was typed, not where it leads
    picker.location.value = hostile  # typed into the box: the same refusal, and the box shows the real folder
    assert picker.path == "data" and picker.location.value == "data"
    assert picker.folder == (root / "data").resolve()


@pytest.mark.parametrize("hostile", ["..", "../outside", "escape", "escape/secret/secret.jpg", "escape.jpg",
                                     "/etc/passwd", "data/../../outside"])
def test_resolve_refuses_what_is_outside(tree, hostile):
    root, outside = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    with pytest.raises(PathOutsideRootError):
        picker.resolve(hostile)


def test_absolute_path_of_the_root_itself_is_refused_too(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, path="data", thumbnails_per_class=0)
    assert not picker.navigate(str(root / "data" / "0"))  # only paths relative to the root are accepted
    assert picker.path == "data"


def test_a_start_path_outside_the_root_opens_the_root(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, path="../outside", thumbnails_per_class=0)
    assert picker.path == "" and "not allowed" in picker.message.value


def test_links_to_files_outside_make_the_folder_unusable_and_are_never_read(tree):
    root, outside = tree
    secret = outside / "secret" / "secret.jpg"
    os.symlink(secret, root / "data" / "0" / "evil.jpg")
    os.symlink(outside / "secret", root / "data" / "1" / "nested")
    picker = DataSourcePicker("image", root=root, path="data", thumbnails_per_class=10)
    assert not picker.ready and picker.data_source is None
    errors = [p["message"] for p in picker.problems if p["level"] == "error"]
    assert len(errors) == 1 and "outside the data folder" in errors[0]
    assert "0/evil.jpg" in errors[0] and "1/nested" in errors[0]
    assert picker.counts == {"0": 3, "1": 3, "5": 3}  # the link is not counted as an example
    assert thumbnail_uri(secret, 72) not in picker.classes_html.value  # nor shown
    assert len(img_sources(picker.classes_html.value)) == 9


def test_links_outside_in_labeled_files_and_annotation_layouts(tree, tmp_path):
    root, outside = tree
    flat = copy_photos(root / "flat", per_label=2, layout="files")
    os.symlink(outside / "secret" / "secret.jpg", flat / "9.0.jpg")
    picker = DataSourcePicker("image", root=root, path="flat", thumbnails_per_class=0)
    assert picker.detected_layout == "labeled_files" and not picker.ready
    assert "9" not in picker.counts and any("9.0.jpg" in p["message"] for p in picker.problems)

    table = root / "table"
    copy_photos(table, per_label=2, layout="files")
    rows = [f"{p.name},{p.name.split('.')[0]}" for p in sorted(table.iterdir())]
    rows += ["../outside/secret/secret.jpg,9", f"{outside / 'secret' / 'secret.jpg'},9"]
    (table / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    picker.navigate("table")
    assert picker.detected_layout == "annotation" and not picker.ready and picker.data_source is None
    assert picker.counts == {"0": 2, "1": 2, "5": 2}
    assert any("outside the data folder" in p["message"] for p in picker.problems if p["level"] == "error")


def shown_text(picker: DataSourcePicker) -> str:
    """Everything the picker shows or reports about the open folder."""
    return "\n".join([picker.summary.value, picker.problems_html.value, picker.classes_html.value,
                      picker.message.value, repr(picker.problems), repr(picker.counts), repr(picker.analysis)])


def test_an_annotation_file_that_links_outside_is_never_read(tree):
    root, outside = tree
    folder = copy_photos(root / "table", per_label=3, layout="files")
    photos = sorted(p.name for p in folder.iterdir())
    # A table outside the root naming this folder's real photos, with labels and headers found nowhere else.
    table = "covert_file,covert_label\n" + "".join(f"{n},leak-{i % 2}\n" for i, n in enumerate(photos))
    (outside / "stolen.csv").write_text(table)
    os.symlink(outside / "stolen.csv", folder / "labels.csv")

    # The same table as a real file inside the root is a usable annotation: the link is what is refused.
    control = copy_photos(root / "control", per_label=3, layout="files")
    (control / "labels.csv").write_text(table)
    picker = DataSourcePicker("image", root=root, path="control", thumbnails_per_class=0)
    assert picker.ready and picker.detected_layout == "annotation"
    assert picker.counts == {"leak-0": 5, "leak-1": 4}

    picker.navigate("table")
    assert not picker.ready and picker.data_source is None
    assert picker.detected_layout == "labeled_files" and picker.analysis.annotation is None
    errors = [p["message"] for p in picker.problems if p["level"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("labels.csv: the link leads outside the data folder")
    assert picker.counts == {"0": 3, "1": 3, "5": 3}  # from the file names, not from the table
    shown = shown_text(picker)
    for secret in ("leak-", "covert", str(outside), "stolen"):
        assert secret not in shown, secret

    picker.layout_dropdown.value = "annotation"  # forcing the layout does not read it either
    assert not picker.ready and picker.detected_layout == "none" and picker.counts == {}
    assert [p["message"] for p in picker.problems] == errors
    assert "link leads outside the data folder" in picker.problems_html.value
    shown = shown_text(picker)
    assert all(secret not in shown for secret in ("leak-", "covert", str(outside), "stolen"))


def test_an_unusable_table_outside_is_not_echoed_in_warnings(tree):
    root, outside = tree
    folder = copy_photos(root / "cols", per_label=2)
    (outside / "private.csv").write_text("patient_name,diagnosis\nJane Roe,confidential-finding\n")
    os.symlink(outside / "private.csv", folder / "meta.csv")
    picker = DataSourcePicker("image", root=root, path="cols", thumbnails_per_class=0)
    assert not picker.ready and picker.counts == {"0": 2, "1": 2, "5": 2}
    assert any("meta.csv: the link leads outside" in p["message"] for p in picker.problems if p["level"] == "error")
    shown = shown_text(picker)
    for secret in ("patient_name", "diagnosis", "Jane Roe", "confidential", "private.csv"):
        assert secret not in shown, secret


def test_an_annotation_link_to_a_table_inside_the_root_is_used(tmp_path):
    folder = copy_photos(tmp_path / "linked", per_label=3, layout="files")
    (tmp_path / "tables").mkdir()
    rows = [f"{p.name},{'even' if i % 2 == 0 else 'odd'}" for i, p in enumerate(sorted(folder.iterdir()))]
    (tmp_path / "tables" / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    os.symlink(tmp_path / "tables" / "labels.csv", folder / "labels.csv")
    picker = DataSourcePicker("image", root=tmp_path, path="linked", thumbnails_per_class=0)
    assert picker.ready and picker.detected_layout == "annotation" and picker.counts == {"even": 5, "odd": 4}
    assert picker.analysis.annotation["file"] == (tmp_path / "tables" / "labels.csv").resolve()


def test_unicode_folder_and_label_names(tmp_path):
    root = tmp_path / "données"
    for label, digit in (("ça", "0"), ("数字", "1"), ("✋ main", "5")):
        (root / "jeu" / label).mkdir(parents=True)
        for photo in sorted((DIGITS / digit).iterdir())[:2]:
            shutil.copy(photo, root / "jeu" / label / f"é{photo.name}")
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=1)
    assert picker.folders.options[0][1] == "jeu"
    assert picker.navigate("jeu") and picker.path == "jeu"
    assert picker.counts == {"ça": 2, "数字": 2, "✋ main": 2} and picker.ready
    assert set(picker.data_source.labeled_images()) == {"ça", "数字", "✋ main"}
    assert "数字" in picker.classes_html.value and len(img_sources(picker.classes_html.value)) == 3


# -- layouts -----------------------------------------------------------------------------------------
def test_detects_labeled_files(tmp_path):
    folder = copy_photos(tmp_path / "flat", per_label=4, layout="files")
    picker = DataSourcePicker("image", root=tmp_path, path="flat", thumbnails_per_class=0)
    assert picker.detected_layout == "labeled_files" and picker.ready
    assert picker.counts == {"0": 4, "1": 4, "5": 4}
    assert picker.data_source == IC.DataSource.labeled_files(folder.resolve())


def test_detects_an_annotation_file_and_the_layout_can_be_forced(tmp_path):
    folder = copy_photos(tmp_path / "ann", per_label=3)  # label folders AND a table (with other labels)
    rows = [f"{p.relative_to(folder).as_posix()},{'even' if i % 2 == 0 else 'odd'}"
            for i, p in enumerate(sorted(folder.rglob("*.JPG")))]
    (folder / "labels.csv").write_text("file,category\n" + "\n".join(rows) + "\n")
    picker = DataSourcePicker("image", root=tmp_path, path="ann", thumbnails_per_class=0)
    assert picker.detected_layout == "annotation"
    assert picker.analysis.annotation["file_column"] == "file"
    assert picker.analysis.annotation["label_column"] == "category"
    assert picker.counts == {"even": 5, "odd": 4} and picker.ready
    assert picker.data_source.kind == "files_by_label"
    assert sorted(map(len, picker.data_source.labeled_images().values())) == [4, 5]

    picker.layout_dropdown.value = "labeled_directories"
    assert picker.layout_choice == "labeled_directories" and picker.detected_layout == "labeled_directories"
    assert picker.counts == {"0": 3, "1": 3, "5": 3}
    assert picker.data_source == IC.DataSource.labeled_directories(folder.resolve())
    picker.layout_dropdown.value = "labeled_files"
    assert not picker.ready  # no labelled file names here
    picker.layout_dropdown.value = "auto"
    assert picker.detected_layout == "annotation"


def test_hand_pose_annotation_json_becomes_the_tasks_data_source(tmp_path):
    folder = copy_photos(tmp_path / "poses", per_label=2, layout="files")
    records = [{"image": p.name, "label": f"digit {p.name[0]}"} for p in sorted(folder.iterdir())]
    (folder / "annotations.json").write_text(json.dumps(records))  # Create ML's form: an array of objects
    picker = DataSourcePicker("hand_pose", root=tmp_path, path="poses", thumbnails_per_class=0)
    assert picker.detected_layout == "annotation" and picker.ready
    assert picker.counts == {"digit 0": 2, "digit 1": 2, "digit 5": 2}
    ds = picker.data_source
    assert isinstance(ds, MLHandPoseClassifier.DataSource) and ds.kind == "annotation"
    examples, skipped = ds._examples()  # the library reads the same table the picker counted
    assert sorted(e.label for e in examples) == sorted(f"digit {d}" for d in "001155") and not skipped


def test_a_table_the_library_cannot_read_is_not_called_an_annotation(tmp_path):
    folder = copy_photos(tmp_path / "poses", per_label=2, layout="files")
    records = [{"image": p.name, "label": "x"} for p in sorted(folder.iterdir())]
    (folder / "annotations.json").write_text(json.dumps({"annotations": records}))  # not Create ML's format
    picker = DataSourcePicker("hand_pose", root=tmp_path, path="poses", thumbnails_per_class=0)
    assert picker.detected_layout == "labeled_files" and picker.counts == {"0": 2, "1": 2, "5": 2}
    assert any("annotations.json" in p["message"] for p in picker.problems)
    assert len(picker.data_source._examples()[0]) == 6


# -- problems ------------------------------------------------------------------------------------------
def test_warns_about_few_examples_unreadable_and_other_files(tmp_path):
    folder = copy_photos(tmp_path / "d", per_label=3)
    (folder / "0" / "broken.jpg").write_bytes(b"this is not a JPEG at all" * 20)
    (folder / "1" / "empty.png").write_bytes(b"")
    (folder / "5" / "notes.txt").write_text("not a photo")
    (folder / ".DS_Store").write_bytes(b"\0")
    picker = DataSourcePicker("image", root=tmp_path, path="d", thumbnails_per_class=5)
    warnings = [p["message"] for p in picker.problems if p["level"] == "warning"]
    assert not [p for p in picker.problems if p["level"] == "error"] and picker.ready
    few = next(w for w in warnings if "fewer than 10" in w)
    assert "'0' (4)" in few and "'5' (3)" in few
    unreadable = next(w for w in warnings if "unreadable" in w)
    assert unreadable.startswith("2 unreadable files") and "0/broken.jpg" in unreadable
    assert "1/empty.png: the file is empty" in unreadable
    assert any("5/notes.txt" in w and "not images" in w for w in warnings)
    html = picker.problems_html.value
    assert html.count("cmlw-problem-warning") == len(warnings) and "broken.jpg" in html
    assert "cannot read broken.jpg" in picker.classes_html.value  # a placeholder, not a crash
    # The image library names the file by its server path; what the picker shows and reports names it
    # inside the data root (a dashboard may be served to others).
    assert any(str(folder / "0" / "broken.jpg") in p.message for p in picker.analysis.problems)
    assert "cannot identify image file 'd/0/broken.jpg'" in unreadable
    assert str(tmp_path) not in shown_text(picker).replace(repr(picker.analysis), "")


def test_errors_that_stop_training(tmp_path):
    copy_photos(tmp_path / "one", labels=("3",), per_label=4)
    copy_photos(tmp_path / "hole", per_label=2)
    (tmp_path / "hole" / "empty label").mkdir()
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("no pictures")
    picker = DataSourcePicker("image", root=tmp_path, path="one", thumbnails_per_class=0)
    assert not picker.ready and any("only one label" in p["message"] for p in picker.problems)
    picker.navigate("hole")
    assert not picker.ready and any("empty label" in p["message"] and p["level"] == "error"
                                    for p in picker.problems)
    picker.navigate("nothing")
    assert picker.detected_layout == "none" and not picker.ready and picker.counts == {}
    assert "No labelled images here" in picker.summary.value


# -- uploads ---------------------------------------------------------------------------------------------
UPLOAD_NAMES = ["../../x.jpg", "..\\..\\win.jpg", "/etc/cron.d/job.jpg", ".hidden.jpg", "a\x00b.jpg", "",
                "..", "日本 語.jpg", "C:\\Users\\me\\photo.jpg", "x" * 300 + ".jpg"]


def test_uploads_with_path_like_names_stay_in_the_uploads_folder(tree):
    root, outside = tree
    outside_before = files_under(outside.parent)
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    saved = picker.save_uploads([{"name": n, "content": photo_bytes()} for n in UPLOAD_NAMES])
    uploads = (root / "uploads").resolve()
    assert len(saved) == len(UPLOAD_NAMES) and all(p.parent == uploads for p in saved)
    names = [p.name for p in saved]
    assert names[:4] == ["x.jpg", "win.jpg", "job.jpg", "hidden.jpg"]
    assert "日本 語.jpg" in names and "photo.jpg" in names and "upload" in names
    assert all(len(n) <= 120 and not n.startswith(".") and "/" not in n and "\\" not in n for n in names)
    assert all(p.read_bytes() == photo_bytes() for p in saved)
    new = files_under(outside.parent) - outside_before
    assert new == {"root/uploads"} | {f"root/uploads/{n}" for n in names}  # nothing anywhere else
    assert picker.path == "uploads"


def test_upload_label_is_one_safe_folder_and_names_never_overwrite(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    first = picker.save_uploads([{"name": "a.jpg", "content": photo_bytes("0", 0)}], label="../../evil")
    second = picker.save_uploads([{"name": "a.jpg", "content": photo_bytes("0", 1)}], label="../../evil")
    assert first[0] == (root / "uploads" / "evil" / "a.jpg").resolve()
    assert second[0].name == "a-1.jpg" and first[0].read_bytes() == photo_bytes("0", 0)


def test_upload_through_the_widget(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    data = photo_bytes("5", 2)
    picker.upload_label.value = "5"
    picker.upload.value = ({"name": "../../../photo.jpg", "type": "image/jpeg", "size": len(data),
                            "content": memoryview(data), "last_modified": NOW},)
    assert (root / "uploads" / "5" / "photo.jpg").read_bytes() == data
    assert "saved 1 files" in picker.message.value
    assert picker.path == "uploads" and picker.counts == {"5": 1}
    # The button's label is "Upload (N)", N = len(value): it counts the saved files; the bytes are gone.
    assert [(f["name"], f["size"], bytes(f["content"])) for f in picker.upload.value] == [
        ("uploads/5/photo.jpg", len(data), b"")]


def test_the_upload_button_counts_every_file_saved_a_zip_as_its_files(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    assert len(picker.upload.value) == 0  # "Upload (0)"
    photos = [photo_bytes("1", i) for i in range(2)]
    picker.upload_label.value = "1"
    picker.upload.value = tuple({"name": f"p{i}.jpg", "type": "image/jpeg", "size": len(d), "content": memoryview(d),
                                 "last_modified": NOW} for i, d in enumerate(photos))
    assert len(picker.upload.value) == 2 and "2 files uploaded" in picker.upload.tooltip
    zipped = _zip({"0/a.jpg": photo_bytes("0", 0), "0/b.jpg": photo_bytes("0", 1), "5/c.jpg": photo_bytes("5", 0)})
    picker.upload_label.value = ""
    picker.upload.value = ({"name": "more.zip", "type": "application/zip", "size": len(zipped),
                            "content": memoryview(zipped), "last_modified": NOW},)
    assert len(picker.upload.value) == 5  # "Upload (5)": two photos, then a zip of three
    assert sorted(f["name"] for f in picker.upload.value) == [
        "uploads/0/a.jpg", "uploads/0/b.jpg", "uploads/1/p0.jpg", "uploads/1/p1.jpg", "uploads/5/c.jpg"]
    assert all(bytes(f["content"]) == b"" for f in picker.upload.value)  # the state keeps no upload's bytes
    # a refused upload keeps the count
    picker.upload.value = ({"name": "bad.zip", "type": "application/zip", "size": 3, "content": memoryview(b"abc"),
                            "last_modified": NOW},)
    assert "upload failed" in picker.message.value and len(picker.upload.value) == 5


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_zip_upload_of_label_folders_is_ready_to_train(tree):
    root, _ = tree
    members = {f"digits/{label}/{i}.jpg": photo_bytes(label, i) for label in ("0", "1") for i in range(3)}
    members["__MACOSX/digits/0/._0.jpg"] = b"resource fork"
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    saved = picker.save_uploads([{"name": "pack.zip", "content": _zip(members)}])
    assert len(saved) == 6 and picker.path == "uploads"
    assert picker.navigate("uploads/digits") and picker.ready and picker.counts == {"0": 3, "1": 3}


def test_zip_members_with_hostile_paths_never_write_outside(tree):
    root, outside = tree
    (root / "uploads").mkdir()
    os.symlink(outside, root / "uploads" / "lnk")  # a link a previous user left in the uploads folder
    before = files_under(outside.parent)
    members = {"../../../evil.jpg": b"1", "/abs/y.jpg": b"2", "ok/z.jpg": b"3", "lnk/newdir/q.jpg": b"4",
               "lnk/q.jpg": b"5", "..\\..\\w.jpg": b"6", "a/../../b.jpg": b"7"}
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    saved = picker.save_uploads([{"name": "../hostile.zip", "content": _zip(members)}])
    uploads = (root / "uploads").resolve()
    assert saved and all(p.resolve().is_relative_to(uploads) for p in saved)
    assert {p.read_bytes() for p in saved} == {b"1", b"2", b"3", b"6", b"7"}  # the two through the link: skipped
    new = files_under(outside.parent) - before
    assert all(n.startswith("root/uploads/") and not n.startswith("root/uploads/lnk") for n in new)
    assert files_under(outside) == {"secret", "secret/secret.jpg"}


def test_zip_with_more_files_than_the_limit_is_refused_before_writing(tree):
    root, _ = tree
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    assert picker.max_zip_members == MAX_ZIP_MEMBERS == 20_000
    before = files_under(root)
    many = _zip({f"many/{i}.txt": b"" for i in range(MAX_ZIP_MEMBERS + 1)})  # the default limit, plus one
    data = photo_bytes()
    picker.upload.value = ({"name": "many.zip", "type": "application/zip", "size": len(many),
                            "content": memoryview(many), "last_modified": NOW},
                           {"name": "first.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data),
                            "last_modified": NOW})
    assert "upload failed" in picker.message.value and f"{MAX_ZIP_MEMBERS + 1} files" in picker.message.value
    assert files_under(root) == before  # not even the photo next to it, nor an uploads folder

    small = DataSourcePicker("image", root=root, thumbnails_per_class=0, max_zip_members=4)
    four = {f"d/{label}/{i}.jpg": photo_bytes(label, i) for label in ("0", "1") for i in range(2)}
    with pytest.raises(ValueError, match="holds 8 files; at most 4"):  # the limit counts the whole upload
        small.save_uploads([{"name": "a.zip", "content": _zip(four)}, {"name": "b.zip", "content": _zip(four)}])
    assert files_under(root) == before
    assert len(small.save_uploads([{"name": "a.zip", "content": _zip({**four, "d/": b""})}])) == 4  # at the limit


def test_uploads_larger_than_the_limit_are_refused_before_writing(tree):
    root, _ = tree
    assert DataSourcePicker("image", root=root, thumbnails_per_class=0).max_upload_bytes == MAX_UPLOAD_BYTES
    photos = [photo_bytes("0", i) for i in range(3)]
    limit = sum(map(len, photos[:2]))
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0, max_upload_bytes=limit)
    before = files_under(root)
    with pytest.raises(ValueError, match="more than the limit"):  # each photo fits, the three together do not
        picker.save_uploads([{"name": f"{i}.jpg", "content": c} for i, c in enumerate(photos)])
    assert files_under(root) == before

    # A zip bomb: a few kB that unpack to more than the limit is judged by what it unpacks to.
    bomb = _zip({"zeros.bin": b"\0" * (limit + 1)}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < limit // 10
    with pytest.raises(ValueError, match="a zip counts unpacked"):
        picker.save_uploads([{"name": "bomb.zip", "content": bomb}])
    assert files_under(root) == before
    picker.upload.value = ({"name": "bomb.zip", "type": "application/zip", "size": len(bomb),
                            "content": memoryview(bomb), "last_modified": NOW},)
    assert "upload failed" in picker.message.value and "nothing was saved" in picker.message.value
    assert files_under(root) == before

    with pytest.raises(ValueError, match="not a zip file"):
        picker.save_uploads([{"name": "fake.zip", "content": photos[0]}])
    saved = picker.save_uploads([{"name": f"{i}.jpg", "content": c} for i, c in enumerate(photos[:2])])
    assert [p.read_bytes() for p in saved] == photos[:2]  # exactly at the limit is fine


def test_uploads_folder_that_is_a_link_outside_is_refused(tree):
    root, outside = tree
    os.symlink(outside, root / "uploads")
    picker = DataSourcePicker("image", root=root, thumbnails_per_class=0)
    data = photo_bytes()
    picker.upload.value = ({"name": "x.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data),
                            "last_modified": NOW},)
    assert "upload failed" in picker.message.value
    assert files_under(outside) == {"secret", "secret/secret.jpg"}
    (root / "uploads").unlink()
    (root / "uploads").mkdir()
    os.symlink(outside / "secret", root / "uploads" / "evil")
    with pytest.raises(PathOutsideRootError):
        picker.save_uploads([{"name": "x.jpg", "content": data}], label="evil")
    assert files_under(outside) == {"secret", "secret/secret.jpg"}


def test_hide_root_leaves_the_server_path_of_the_root_out(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(root, tmp_path / "alias")
    r = str(root)
    assert hide_root(f"cannot identify image file '{r}/0/x.jpg'", root) == "cannot identify image file '0/x.jpg'"
    assert hide_root(f"no hand in {r}/0/x.jpg; use another", tmp_path / "alias") == "no hand in 0/x.jpg; use another"
    assert hide_root(f"in {r}.", root) == "in ./." and hide_root(f"({r}/)", root) == "(./)"
    for untouched in (f"{r}2/x.jpg", f"{r}.txt", f"/else{r}/x.jpg", "relative/x.jpg", ""):
        assert hide_root(untouched, root) == untouched
    assert hide_root("/etc/x", "/") == "/etc/x" and hide_root(f"{r}/x", None) == f"{r}/x"


def test_sanitize_filename_keeps_letters_drops_folders():
    assert sanitize_filename("../../x.jpg") == "x.jpg"
    assert sanitize_filename("über/ß.png") == "ß.png"
    assert sanitize_filename("e\u0301.jpg") == "\u00e9.jpg"  # NFC
    assert sanitize_filename("...") == "upload" and sanitize_filename("a\nb\t.jpg") == "ab.jpg"
    assert sanitize_filename("x;rm -rf $HOME`.jpg") == "x_rm -rf _HOME_.jpg"


# -- the hand tasks ------------------------------------------------------------------------------------
def test_hand_pose_thumbnails_show_the_hand_skeleton(tmp_path):
    copy_photos(tmp_path / "hands", labels=("0", "5"), per_label=2)
    picker = DataSourcePicker("hand_pose", root=tmp_path, path="hands", thumbnails_per_class=1)
    assert picker.ready and picker.counts == {"0": 2, "5": 2}
    photo = picker.analysis.labels["5"][0]
    assert with_hand(Image.open(photo).convert("RGB"))[1] is not None  # a hand is found
    shown = img_sources(picker.classes_html.value)
    assert len(shown) == 2
    assert thumbnail_uri(photo, 72, hand=True) in shown  # the skeleton drawn on the photo
    assert thumbnail_uri(photo, 72, hand=False) not in shown


def test_hand_action_shows_a_few_frames_and_flags_broken_videos(tmp_path):
    folder = copy_clips(tmp_path / "clips")
    (folder / "zoom" / "broken.mp4").write_bytes(b"\0\1\2 not a video" * 50)
    picker = DataSourcePicker("hand_action", root=tmp_path, path="clips", thumbnails_per_class=3)
    assert picker.detected_layout == "labeled_directories" and picker.ready
    assert picker.counts == {"wave": 3, "zoom": 4}
    assert isinstance(picker.data_source, MLHandActionClassifier.DataSource)
    warnings = [p["message"] for p in picker.problems]
    assert any("fewer than 5 videos" in w for w in warnings)
    assert any(w.startswith("1 unreadable files") and "zoom/broken.mp4" in w for w in warnings)
    html = picker.classes_html.value
    assert len(img_sources(html)) == 2 * 3  # one clip per label (a readable one), three frames of it
    assert "cannot read" not in html
    times = [float(t) for t in re.findall(r"<figcaption>(\d+\.\d)s</figcaption>", html)]
    assert len(times) == 6 and times[0] == 0.0 and times[0] < times[1] < times[2]


def test_hand_action_annotation_with_start_and_end_times(annotated_clips):
    picker = DataSourcePicker("hand_action", root=annotated_clips.parent, path=annotated_clips.name,
                              thumbnails_per_class=1)
    assert picker.detected_layout == "annotation" and picker.ready
    assert picker.analysis.annotation == {"file": (annotated_clips / "actions.csv").resolve(),
                                          "file_column": "video", "label_column": "action",
                                          "start_column": "start_time", "end_column": "end_time"}
    assert picker.counts == {"wave": 6, "zoom": 6}  # one example per row: two time ranges per clip
    assert not [p for p in picker.problems if p["level"] == "error"]
    ds = picker.data_source
    assert isinstance(ds, MLHandActionClassifier.DataSource) and ds.kind == "annotation"
    assert ds.spec["start_time_column"] == "start_time" and ds.spec["end_time_column"] == "end_time"
    examples, skipped = ds._examples()  # what training will read: the clips with their time ranges
    ranges = [(parse_time(a), parse_time(b)) for a, b in CLIP_RANGES]
    assert not skipped and sorted((e.source.name, e.label, e.start, e.end) for e in examples) == sorted(
        (clip.name, label, start, end) for label in ("wave", "zoom")
        for clip in sorted(annotated_clips.glob(f"{label}_*.mp4")) for start, end in ranges)
    assert ranges == [(0.0, 1.0), (1.0, 2.0)]
    assert len(img_sources(picker.classes_html.value)) == 2 * 3  # three frames of one clip per label


def test_hand_action_thumbnails_draw_the_skeleton_on_video_frames(tmp_path):
    copy_clips(tmp_path / "clips", labels=("wave", "zoom"), per_label=1)
    picker = DataSourcePicker("hand_action", root=tmp_path, path="clips", thumbnails_per_class=1)
    shown = img_sources(picker.classes_html.value)
    with_skeleton = 0
    for label in ("wave", "zoom"):
        clip = picker.analysis.labels[label][0]
        frames = [img for _t, img in video_frames(clip, count=3)]
        for img in frames:
            drawn = thumbnail_uri(img, 72, hand=True)
            assert drawn in shown  # the frame as shown: with the skeleton of the hand found in it
            if with_hand(img)[1] is not None:
                with_skeleton += 1
                assert thumbnail_uri(img, 72, hand=False) not in shown  # not the bare frame
    assert len(shown) == 6 and with_skeleton >= 4  # the sample clips show a hand in (nearly) every frame


def test_a_label_folder_picked_as_the_dataset_is_refused_and_its_parent_offered(tmp_path):
    """Clicking `0/` in the Open list: each photo would be its own label; refused, the parent offered."""
    from createml_widgets import samples

    root = tmp_path / "data"
    shutil.copytree(samples.sign_language_digits() / "0", root / "digits" / "0")
    shutil.copytree(samples.sign_language_digits() / "1", root / "digits" / "1")
    picker = DataSourcePicker("image", root=root, path="digits/0")
    assert not picker.ready and picker.data_source is None
    errors = [p["message"] for p in picker.problems if p["level"] == "error"]
    assert any("every label has only one image" in e and "use the parent folder (digits/)" in e for e in errors), errors
    assert picker.parent_button.layout.display is None
    picker.parent_button.click()
    assert picker.path == "digits" and picker.ready and sorted(picker.counts) == ["0", "1"]
    assert picker.parent_button.layout.display == "none"


def test_label_folders_of_one_photo_each_are_a_dataset_not_a_label_folder(tmp_path):
    """A first photo (or clip) recorded per label with the camera: label folders of one file each are a small
    dataset, not the files of one label (only files standing in for labels are refused)."""
    from createml_widgets import samples

    root = tmp_path / "data"
    for label in ("0", "1"):
        (root / "uploads" / label).mkdir(parents=True)
        shutil.copy(next((samples.sign_language_digits() / label).iterdir()), root / "uploads" / label / "a.jpg")
    picker = DataSourcePicker("image", root=root, path="uploads")
    errors = [p["message"] for p in picker.problems if p["level"] == "error"]
    assert not any("only one image" in e for e in errors), errors
    assert sorted(picker.counts) == ["0", "1"]


def test_a_data_root_holding_one_dataset_folder_opens_on_it(tmp_path, monkeypatch):
    """`CREATEML_WIDGETS_DATA_ROOT=~/photos make dashboard`, ~/photos holding one dataset folder."""
    from createml_widgets import samples

    root = tmp_path / "mine"
    for label in ("0", "1"):
        shutil.copytree(samples.sign_language_digits() / label, root / "photos" / label)
    monkeypatch.setenv("CREATEML_WIDGETS_DATA_ROOT", str(root))
    picker = DataSourcePicker("image")
    assert picker.root == root.resolve() and picker.path == "photos" and picker.ready, picker.problems
    assert DataSourcePicker("image", root=root).path == ""  # a root given in code opens as given


def test_a_data_root_of_several_datasets_opens_on_the_one_this_task_trains_on(tmp_path, monkeypatch):
    """A class folder holding the photos and the clips: each task opens on its own dataset, no root error;
    two photo datasets leave the choice to the user (the root is listed, nothing is guessed)."""
    from createml_widgets import samples

    root = tmp_path / "class"
    for label in ("0", "1"):
        shutil.copytree(samples.sign_language_digits() / label, root / "photos" / label)
    for label in sorted(p.name for p in samples.hand_action_clips().iterdir() if p.is_dir())[:2]:
        shutil.copytree(samples.hand_action_clips() / label, root / "clips" / label)
    monkeypatch.setenv("CREATEML_WIDGETS_DATA_ROOT", str(root))
    assert DataSourcePicker("image").path == "photos"
    assert DataSourcePicker("hand_action").path == "clips"
    shutil.copytree(root / "photos", root / "more photos")
    picker = DataSourcePicker("image")
    assert picker.path == "" and not picker.ready
    assert {v for _t, v in picker.folders.options} >= {"photos", "more photos", "clips"}
