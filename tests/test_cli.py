"""The command line on real data: train, evaluate and predict each task, continue sessions, refuse bad input.

Every run goes through `cli.main` (one through `python -m createml_widgets`), on copies of the bundled
photos and hand-action clips, with few iterations so the whole file stays quick.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from createml_widgets import cli

SAMPLES = Path(__file__).resolve().parent.parent / "createml_widgets" / "samples"
DIGITS = SAMPLES / "sign-language-digits"
CLIPS = SAMPLES / "hand-action-clips"
DIGIT_LABELS = ("0", "1", "5")
ACTION_LABELS = ("rotate", "wave")


def run_cli(*argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one command; argparse's exits count as a status too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exit_:
            rc = exit_.code
    return rc, out.getvalue(), err.getvalue()


def copy_digits(root: Path, labels=DIGIT_LABELS, per_label: int = 8) -> Path:
    for label in labels:
        (root / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:per_label]:
            shutil.copy(photo, root / label / photo.name)
    return root


def copy_clips(root: Path, per_label: int) -> Path:
    for label in ACTION_LABELS:
        (root / label).mkdir(parents=True)
        for clip in sorted((CLIPS / label).glob("*.mp4"))[:per_label]:
            shutil.copy(clip, root / label / clip.name)
    return root


def assert_clean_error(rc, err: str, *names) -> None:
    """Exit status 2 and one `error:` line naming `names`, no traceback."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], lines[0]


def session_json(out: Path) -> dict:
    return json.loads((out.with_suffix(".session") / "session.json").read_text())


def train(task: str, data, out, *options):
    return run_cli("train", task, data, "--out", out, *options)


def _trained(tmp_path_factory, task: str, make_data, out_name: str, *options) -> SimpleNamespace:
    """`train TASK` run once for a module: its data, model file, session folder and output."""
    root = tmp_path_factory.mktemp(f"cli-{task}")
    data = make_data(root)
    out = root / out_name
    rc, stdout, stderr = train(task, data, out, "--iterations", 3, *options, "--validation", "none")
    assert rc == 0, stderr
    return SimpleNamespace(data=data, out=out, session=out.with_suffix(".session"), stdout=stdout, stderr=stderr)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return _trained(tmp_path_factory, "image", lambda root: copy_digits(root / "digits"), "Digits.mlmodel")


@pytest.fixture(scope="module")
def handpose_run(tmp_path_factory):
    return _trained(tmp_path_factory, "handpose", lambda root: copy_digits(root / "digits"), "Poses.mlpackage")


@pytest.fixture(scope="module")
def handaction_run(tmp_path_factory):
    return _trained(tmp_path_factory, "handaction", lambda root: copy_clips(root / "clips", per_label=2),
                    "Actions.mlmodel", "--window", 10, "--frame-rate", 10)


# -- train, evaluate, predict ---------------------------------------------------------------------------
def test_train_image_writes_the_model_with_progress_on_stderr(image_run):
    assert image_run.out.is_file() and image_run.out.stat().st_size > 0
    assert f"wrote {image_run.out}" in image_run.stdout
    assert "MLImageClassifier" in image_run.stdout
    # progress: on stderr only
    assert "Extracting features: 24/24" in image_run.stderr
    assert "Training: 3/3" in image_run.stderr
    assert "Training:" not in image_run.stdout and "Extracting" not in image_run.stdout
    d = session_json(image_run.out)
    assert d["training_data"]["value"] == str(image_run.data) and d["parameters"]["max_iterations"] == 3
    assert d["iteration"] == 3 and d["summary"]["training_examples"] == 24


def test_evaluate_and_predict_image(image_run):
    rc, out, err = run_cli("evaluate", "image", image_run.data, "--session", image_run.session)
    assert rc == 0, err
    assert "Accuracy:" in out and "24 examples" in out and "CONFUSION MATRIX" in out

    photos = [sorted((image_run.data / label).iterdir())[0] for label in ("5", "0")]
    rc, out, err = run_cli("predict", "image", *photos, "--session", image_run.session, "--top", 2, "--json")
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in photos]
    for line, true_label in zip(lines, ("5", "0")):
        assert line["label"] in DIGIT_LABELS
        assert line["label"] == true_label  # a training photo of a model with 100% training accuracy
        labels = [label for label, _ in line["prediction"]]
        probs = [p for _, p in line["prediction"]]
        assert len(labels) == 2 and labels[0] == line["label"] and set(labels) <= set(DIGIT_LABELS)
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_train_evaluate_predict_handpose(handpose_run):
    assert handpose_run.out.is_dir()  # an .mlpackage
    assert "MLHandPoseClassifier" in handpose_run.stdout and session_json(handpose_run.out)["iteration"] == 3
    assert "Training: 3/3" in handpose_run.stderr

    rc, out, err = run_cli("evaluate", "handpose", handpose_run.data, "--session", handpose_run.session)
    assert rc == 0, err
    assert "Accuracy:" in out

    photos = [sorted((handpose_run.data / label).iterdir())[0] for label in DIGIT_LABELS]
    rc, out, err = run_cli("predict", "handpose", *photos, "--session", handpose_run.session, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    failed = [line for line in lines if "error" in line]
    assert rc == (1 if failed else 0), err
    assert len(failed) < 3
    for line in lines:
        if "error" in line:
            assert "no hand was detected" in line["error"]
        else:
            assert line["label"] in DIGIT_LABELS and len(line["prediction"]) == 3
            assert abs(sum(p for _, p in line["prediction"]) - 1) < 1e-3


def test_train_evaluate_predict_handaction(handaction_run):
    assert handaction_run.out.is_file()
    assert "MLHandActionClassifier" in handaction_run.stdout
    params = session_json(handaction_run.out)["parameters"]
    assert (params["prediction_window_size"], params["target_frame_rate"], params["maximum_iterations"]) == (10, 10, 3)
    assert "Extracting features: 4/4" in handaction_run.stderr and "Training: 3/3" in handaction_run.stderr

    rc, out, err = run_cli("evaluate", "handaction", handaction_run.data, "--session", handaction_run.session)
    assert rc == 0, err
    assert "Accuracy:" in out and "4 examples" in out

    clip = sorted((handaction_run.data / "wave").iterdir())[0]
    rc, out, err = run_cli("predict", "handaction", clip, "--session", handaction_run.session, "--top", 1, "--json")
    assert rc == 0, err
    (line,) = [json.loads(line) for line in out.splitlines()]
    assert line["file"] == str(clip) and line["label"] in ACTION_LABELS
    windows = line["prediction"]
    assert len(windows) >= 2  # a 2 s clip at 10 fps in windows of 10 frames
    for w in windows:
        start, stop = w["frames"]
        assert 0 <= start < stop <= 20 and stop - start == 10
        assert len(w["results"]) == 1 and w["results"][0][0] in ACTION_LABELS


def test_subprocess_smoke_predict(image_run):
    photo = sorted((image_run.data / "1").iterdir())[0]
    proc = subprocess.run([sys.executable, "-m", "createml_widgets", "predict", "image", str(photo),
                           "--session", str(image_run.session), "--json"], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    line = json.loads(proc.stdout.strip())
    assert line["file"] == str(photo) and line["label"] in DIGIT_LABELS


# -- sessions (on the hand pose task, whose models export in a moment) ------------------------------------------
def test_rerunning_train_continues_the_session(small_digits, tmp_path):
    out = tmp_path / "Poses.mlmodel"
    rc, _, err = train("handpose", small_digits, out, "--iterations", 2, "--validation", "none")
    assert rc == 0, err
    # the same command again, asking for more iterations: no extraction again, training goes on from 2
    rc, stdout, err = train("handpose", small_digits, out, "--iterations", 4, "--validation", "none")
    assert rc == 0, err
    assert "continuing the training session" in err and "Extracting" not in err
    assert "Training: 4/4" in err and "Training: 1/" not in err
    assert session_json(out)["iteration"] == 4 and f"wrote {out}" in stdout
    checkpoints = sorted(p.name for p in (out.with_suffix(".session") / "checkpoints").iterdir())
    assert checkpoints == ["training-00002.pt", "training-00004.pt"]
    # and once more without --iterations: the finished session is written again as it is
    rc, stdout, err = train("handpose", small_digits, out, "--validation", "none")
    assert rc == 0, err
    assert "continuing" in err and "Training: 1/" not in err and session_json(out)["iteration"] == 4


def test_a_failed_run_does_not_pin_its_data_to_the_session(small_digits, tmp_path):
    out = tmp_path / "Poses.mlmodel"
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = train("handpose", empty, out, "--iterations", 2)
    assert_clean_error(rc, err, empty)
    assert not out.with_suffix(".session").exists()  # refused before any work: no session is left behind
    # the same --out with the right folder trains on that folder (not the old, empty one)
    rc, stdout, err = train("handpose", small_digits, out, "--iterations", 2)
    assert rc == 0, err
    assert "continuing" not in err
    assert session_json(out)["training_data"]["path"] == str(small_digits)
    assert session_json(out)["summary"]["training_examples"] == 24 and f"wrote {out}" in stdout


def test_other_data_or_options_for_a_trained_session_are_refused_until_restart(small_digits, tmp_path):
    out = tmp_path / "Poses.mlmodel"
    rc, _, err = train("handpose", small_digits, out, "--iterations", 2, "--validation", "none")
    assert rc == 0, err
    other = copy_digits(tmp_path / "other", labels=("0", "1"), per_label=6)
    rc, _, err = train("handpose", other, out, "--iterations", 2, "--validation", "none")
    assert_clean_error(rc, err, small_digits, other, "--restart")
    rc, _, err = train("handpose", small_digits, out, "--iterations", 2, "--validation", "none", "--batch-size", 8)
    assert_clean_error(rc, err, "batch_size is 32, not 8", "--restart")
    assert session_json(out)["training_data"]["path"] == str(small_digits)  # untouched

    rc, stdout, err = train("handpose", other, out, "--iterations", 2, "--validation", "none", "--restart")
    assert rc == 0, err
    assert "discarded the training session" in err
    assert session_json(out)["training_data"]["path"] == str(other)
    assert session_json(out)["summary"]["labels"] == {"0": 6, "1": 6} and f"wrote {out}" in stdout


# -- hand action annotation files -----------------------------------------------------------------------------
def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_train_handaction_from_an_annotation_file_uses_its_time_ranges(tmp_path):
    from createml_widgets import MLHandActionClassifier, MLTrainingSessionParameters

    clips = copy_clips(tmp_path / "clips", per_label=1)
    rows = []
    for label in ACTION_LABELS:
        for clip in sorted((clips / label).iterdir()):
            name = f"{label}/{clip.name}"
            rows += [[name, label, "0", "1"], [name, label, "00:01", "2"]]  # each 2 s clip as two 1 s examples
    annotation = write_csv(tmp_path / "actions.csv", ["clip", "action", "start", "end"], rows)
    out = tmp_path / "Actions.mlmodel"
    rc, stdout, err = train("handaction", clips, out, "--annotation", annotation, "--video-column", "clip",
                            "--label-column", "action", "--iterations", 2, "--window", 5, "--frame-rate", 10,
                            "--validation", "none")
    assert rc == 0, err
    assert session_json(out)["summary"]["training_examples"] == 4 and "Extracting features: 4/4" in err
    spec = session_json(out)["training_data"]
    assert (spec["media_column"], spec["label_column"]) == ("clip", "action")
    assert (spec["start_time_column"], spec["end_time_column"]) == ("start", "end")  # found in the file
    # the examples are the 1 s ranges, not the whole 2 s clips
    session = MLHandActionClassifier.restore_training_session(
        MLTrainingSessionParameters(session_directory=out.with_suffix(".session")))
    lengths = [len(seq) for seq in session.features.features.values()]
    assert len(lengths) == 4 and all(8 <= n <= 11 for n in lengths), lengths


def test_annotation_time_columns_can_be_named(tmp_path):
    import createml_widgets

    clip = sorted((CLIPS / "wave").glob("*.mp4"))[0]
    annotation = write_csv(tmp_path / "a.csv", ["video", "label", "from", "to", "start"],
                           [[clip.name, "wave", "0.5", "01.5", "9"]])
    args = cli.build_parser().parse_args(["train", "handaction", str(clip.parent), "--out", "x.mlmodel",
                                          "--annotation", str(annotation), "--start-column", "from",
                                          "--end-column", "to"])
    source = cli._data_source("handaction", createml_widgets.MLHandActionClassifier, args.data, args)
    (example,), skipped = source._examples()
    assert skipped == [] and example.source == clip
    assert (example.label, example.start, example.end) == ("wave", 0.5, 1.5)


# -- bad input: a clean message and exit status 2, before any training -----------------------------------------
def test_bad_out_suffix_is_refused_before_training(small_digits, tmp_path):
    out = tmp_path / "Digits.txt"
    rc, stdout, err = train("image", small_digits, out, "--iterations", 2)
    assert_clean_error(rc, err, out, ".mlmodel")
    assert "Extracting" not in err and stdout == ""
    assert not out.with_suffix(".session").exists()


def test_out_in_an_unwritable_place_is_refused_before_training(small_digits, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker / "Digits.mlmodel"
    rc, _, err = train("image", small_digits, out, "--iterations", 2)
    assert_clean_error(rc, err, "--out", out)
    assert "Extracting" not in err and blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize(("task", "options", "names"), [
    ("image", ["--iterations", "0"], ["--iterations 0", "max_iterations=0"]),
    ("handpose", ["--iterations", "0"], ["--iterations 0", "maximum_iterations=0"]),
    ("handpose", ["--batch-size", "0"], ["--batch-size 0", "batch_size=0"]),
    ("handaction", ["--window", "0"], ["--window 0", "prediction_window_size=0"]),
    ("image", ["--revision", "9"], ["--revision 9"]),
    ("image", ["--checkpoint-interval", "0"], ["checkpoint_interval=0"]),
])
def test_bad_parameter_values_are_refused_by_name(small_digits, tmp_path, task, options, names):
    out = tmp_path / "M.mlmodel"
    rc, _, err = train(task, small_digits, out, *options)
    assert_clean_error(rc, err, *names)
    assert not out.with_suffix(".session").exists()


@pytest.mark.parametrize(("task", "options", "expected"), [
    ("image", ["--validation", "1.5"], "--validation"),
    ("image", ["--validation", "sometimes"], "--validation"),
    ("image", ["--mlp", "128,x"], "--mlp"),
    ("image", ["--mlp", "64,0"], "--mlp"),
    ("image", ["--augment", "crop,sparkle"], "choose from crop, rotation, blur, exposure, noise, flip"),
    ("handpose", ["--augment", "crop"], "choose from horizontally_flip, rotate, scale, translate"),
    ("image", ["--window", "5"], "unrecognized arguments: --window"),
    ("image", ["--annotation", "a.csv"], "unrecognized arguments: --annotation"),
])
def test_bad_option_values_are_usage_errors(tmp_path, task, options, expected):
    rc, stdout, err = train(task, tmp_path, tmp_path / "M.mlmodel", *options)
    assert rc == 2 and stdout == ""
    assert "usage:" in err and expected in err and "Traceback" not in err


def test_missing_data_and_missing_session_name_the_path(tmp_path, image_run):
    missing = tmp_path / "no-such-folder"
    rc, _, err = train("image", missing, tmp_path / "M.mlmodel", "--iterations", 2)
    assert_clean_error(rc, err, missing)

    rc, _, err = run_cli("evaluate", "image", image_run.data, "--session", tmp_path / "nothing.session")
    assert_clean_error(rc, err, tmp_path / "nothing.session")

    rc, _, err = run_cli("train", "handaction", tmp_path, "--out", tmp_path / "A.mlmodel",
                         "--annotation", tmp_path / "missing.csv")
    assert_clean_error(rc, err, "--annotation", tmp_path / "missing.csv")

    # a session of another task
    rc, _, err = train("handpose", image_run.data, image_run.out)
    assert_clean_error(rc, err, "MLImageClassifier", "--restart")


def test_predict_reports_each_unreadable_file_and_goes_on(tmp_path, image_run):
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("hello")
    good = sorted((image_run.data / "0").iterdir())[0]
    rc, out, err = run_cli("predict", "image", bad, good, tmp_path / "missing.jpg", "--session", image_run.session, "--json")
    assert rc == 1 and "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [("error" in line) for line in lines] == [True, False, True]
    assert str(bad) in lines[0]["error"] and lines[1]["label"] in DIGIT_LABELS
    assert f"error: {bad}" in err and f"error: {tmp_path / 'missing.jpg'}" in err


# -- help ----------------------------------------------------------------------------------------------------------
def test_augment_help_lists_each_tasks_own_options():
    helps = {}
    for task in cli.TASKS:
        rc, out, _ = run_cli("train", task, "-h")
        assert rc == 0
        helps[task] = " ".join(out.split())
    assert "crop, rotation, blur, exposure, noise, flip" in helps["image"]
    assert "horizontally_flip, rotate, scale, translate" in helps["handpose"]
    assert "drop_frames, horizontally_flip, interpolate_frames, rotate, scale, translate" in helps["handaction"]
    assert "crop" not in helps["handpose"] and "crop" not in helps["handaction"]
    assert "drop_frames" not in helps["image"] and "drop_frames" not in helps["handpose"]
    assert "--window" in helps["handaction"] and "--window" not in helps["image"]
    assert "--mlp" in helps["image"] and "--mlp" not in helps["handpose"]


def test_augmentation_names_are_the_tasks_own_flags():
    import createml_widgets as cw

    enums = {"image": cw.MLImageClassifier.ImageAugmentationOptions,
             "handpose": cw.MLHandPoseClassifier.ImageAugmentationOptions,
             "handaction": cw.MLHandActionClassifier.VideoAugmentationOptions}
    for task, flags in enums.items():  # --augment takes the enum's names (no copy of them to keep in step)
        names = [f.name.lower() for f in flags]
        args = cli.build_parser().parse_args(["train", task, "d", "--out", "m.mlmodel", "--augment", ",".join(names)])
        assert args.augment == tuple(names)
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["train", task, "d", "--out", "m.mlmodel", "--augment", "sparkle"])
    args = cli.build_parser().parse_args(["train", "handaction", "d", "--out", "m.mlmodel",
                                          "--augment", "Rotate, drop-frames"])
    params = cli._parameters("handaction", cw.MLHandActionClassifier, args)
    assert params.augmentation_options == cw.MLHandActionClassifier.VideoAugmentationOptions.ROTATE | \
        cw.MLHandActionClassifier.VideoAugmentationOptions.DROP_FRAMES


# -- output for people: an iteration table, what is written, a readable prediction table ------------------------
def test_train_prints_an_iteration_table_and_what_it_wrote(image_run):
    err = image_run.stderr
    header = next(line for line in err.splitlines() if line.startswith("| Iteration"))
    assert "Elapsed" in header and "Training accuracy" in header and "Training loss" in header, header
    rows = [line for line in err.splitlines() if re.match(r"^\|\s+\d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == [1, 2, 3], rows
    assert all(len(line) <= 100 for line in err.splitlines() if line.startswith(("|", "+"))), err
    assert "it/s" not in err
    assert f"writing {image_run.out.name} (Core ML)" in err
    summary = image_run.stdout.splitlines()[-1]
    assert re.search(r"\d+\.\d MB · input image \(299×299 image\) · outputs (classLabel, classLabelProbs|"
                     r"classLabelProbs, classLabel) · trained in \d+\.\d s, written in \d+\.\d s", summary), summary


def test_predict_from_the_written_model_file_as_a_table_and_as_json(image_run):
    photos = [sorted((image_run.data / label).iterdir())[0] for label in DIGIT_LABELS]
    rc, out, err = run_cli("predict", "image", *photos, "--model", image_run.out)
    assert rc == 0, err
    head, *rows = out.splitlines()
    assert head.split()[:3] == ["file", "label", "conf."] and len(rows) == 3
    for photo, row in zip(photos, rows):
        assert row.startswith(str(photo)) and re.search(r"  \S+ +\d+\.\d% ", row), row
        assert not re.search(r"\d\.\d{5,}", row), row  # no 17-digit probabilities
    rc, out, _ = run_cli("predict", "image", *photos, "--model", image_run.out, "--json")
    from_file = [json.loads(line) for line in out.splitlines()]
    rc2, out2, _ = run_cli("predict", "image", *photos, "--session", image_run.session, "--json")
    from_session = [json.loads(line) for line in out2.splitlines()]
    assert rc == rc2 == 0
    for a, b in zip(from_file, from_session):  # the file's own numbers agree with the trained model's
        assert a["label"] == b["label"]
        assert abs(a["prediction"][0][1] - b["prediction"][0][1]) < 2e-2, (a, b)


def test_predict_a_hand_pose_from_the_written_package(handpose_run):
    photo = sorted((handpose_run.data / "5").iterdir())[0]
    rc, out, err = run_cli("predict", "handpose", photo, "--model", handpose_run.out, "--json")
    assert rc == 0, err
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["label"] in DIGIT_LABELS and abs(sum(p for _, p in line["prediction"]) - 1) < 1e-3


def test_predict_needs_exactly_one_model(image_run, tmp_path):
    photo = sorted((image_run.data / "0").iterdir())[0]
    assert_clean_error(*run_cli("predict", "image", photo)[::2], "--session", "--model")
    rc, _out, err = run_cli("predict", "image", photo, "--model", tmp_path / "nothing.mlmodel")
    assert_clean_error(rc, err, "nothing.mlmodel")
