"""The command line as a careless user meets it: --restart in a folder of their files, two trains at once, damaged
session files, more than 1000 iterations, file names that are not UTF-8, data errors (issue 11)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from createml_widgets import cli

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"


def run_cli(*argv, stdout=None) -> tuple[int, str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([os.fspath(a) if isinstance(a, Path) else str(a) for a in argv])
        except SystemExit as exit_:
            rc = exit_.code
    text = out.getvalue() if isinstance(out, io.StringIO) else ""
    return rc, text, err.getvalue()


def one_error_line(rc, err: str, *names) -> str:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def copy_digits(root: Path, labels=("0", "1", "5"), per_label: int = 8) -> Path:
    for label in labels:
        (root / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:per_label]:
            shutil.copy(photo, root / label / photo.name)
    return root


def train(data, out, *options):
    return run_cli("train", "image", data, "--out", out, *options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-reliability")
    data = copy_digits(root / "digits")
    out = root / "Digits.mlmodel"
    rc, _, err = train(data, out, "--iterations", 4, "--checkpoint-interval", 2, "--validation", "none")
    assert rc == 0, err
    return data, out.with_suffix(".session")


def _copy_session(trained, tmp_path) -> Path:
    session = tmp_path / "copy.session"
    shutil.copytree(trained[1], session)
    return session


# -- 1. --restart never deletes the user's files --------------------------------------------------------------
def test_restart_with_the_session_in_a_folder_of_the_users_files_refuses_and_deletes_nothing(tmp_path):
    data = copy_digits(tmp_path / "digits")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("my notes")
    shutil.copy(next((data / "0").iterdir()), project / "holiday.jpg")
    out = project / "Digits.mlmodel"
    rc, _, err = train(data, out, "--session", project, "--iterations", 2, "--validation", "none")
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in project.iterdir() if p.is_file() and p.suffix in (".txt", ".jpg")}

    rc, _, err = train(data, out, "--session", project, "--iterations", 2, "--validation", "none", "--restart")
    line = one_error_line(rc, err, project, "notes.txt", "holiday.jpg", "Digits.mlmodel", "nothing was deleted")
    assert "did not write" in line
    assert {p.name: p.read_bytes() for p in project.iterdir() if p.name in before} == before
    assert (project / "session.json").exists() and (project / "Digits.mlmodel").exists()


def test_restart_of_a_session_folder_removes_only_the_session(tmp_path):
    data = copy_digits(tmp_path / "digits")
    out = tmp_path / "Digits.mlmodel"
    rc, _, err = train(data, out, "--iterations", 3, "--checkpoint-interval", 1, "--validation", "none")
    assert rc == 0, err
    rc, _, err = train(data, out, "--iterations", 2, "--validation", "none", "--restart")
    assert rc == 0, err
    session = out.with_suffix(".session")
    assert sorted(p.name for p in (session / "checkpoints").iterdir()) == ["training-00002.pt"]
    assert json.loads((session / "session.json").read_text())["iteration"] == 2


# -- 3. two trains on one session folder ---------------------------------------------------------------------
def test_a_second_train_on_a_busy_session_folder_is_refused_in_one_line(tmp_path):
    data = copy_digits(tmp_path / "digits")
    out = tmp_path / "Digits.mlmodel"
    session = out.with_suffix(".session")
    proc = subprocess.Popen([sys.executable, "-m", "createml_widgets", "train", "image", str(data), "--out", str(out),
                             "--iterations", "100000", "--mlp", "32", "--checkpoint-interval", "100000",
                             "--validation", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                # session.json is written once the first run holds the folder's lock (it is next written
                # at a checkpoint, so its phase still reads as extracting while the first run trains)
                if json.loads((session / "session.json").read_text()).get("phase") in ("extractingFeatures",
                                                                                        "training"):
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        else:
            pytest.fail("the first run never wrote its session.json")
        rc, _, err = train(data, out, "--iterations", "100000", "--mlp", "32", "--checkpoint-interval", "100000",
                           "--validation", "none")
        one_error_line(rc, err, "another training run is using the session folder", session)
        assert proc.poll() is None  # the first run goes on
    finally:
        proc.kill()
        proc.wait()


# -- 5. damaged session files: one line, exit 2; a damaged latest checkpoint is stepped over -------------------------
@pytest.mark.parametrize("content", ["", "[]", '{"task": "MLImageClassifier", "phase": "training", "training_data": 3}', "{\"format\""])
def test_a_damaged_session_json_is_one_line_and_restart_recovers(trained, tmp_path, content):
    data, _ = trained
    session = _copy_session(trained, tmp_path)
    (session / "session.json").write_text(content)
    out = tmp_path / "M.mlmodel"
    args = ("--session", session, "--iterations", 2, "--validation", "none")
    one_error_line(*train(data, out, *args)[::2], session / "session.json", "--restart")
    rc, _, err = run_cli("predict", "image", next((data / "0").iterdir()), "--session", session)
    one_error_line(rc, err, session / "session.json")
    rc, _, err = train(data, out, *args, "--restart")
    assert rc == 0, err


def test_a_damaged_feature_chunk_is_one_line_naming_it(trained, tmp_path):
    data, _ = trained
    session = _copy_session(trained, tmp_path)
    chunk = next((session / "features").iterdir())
    chunk.write_bytes(chunk.read_bytes()[:200])
    rc, _, err = run_cli("predict", "image", next((data / "0").iterdir()), "--session", session)
    one_error_line(rc, err, chunk)


def test_predict_steps_over_a_damaged_latest_checkpoint_and_fails_cleanly_when_none_is_left(trained, tmp_path):
    data, _ = trained
    session = _copy_session(trained, tmp_path)
    latest = session / "checkpoints" / "training-00004.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    photo = next((data / "0").iterdir())
    rc, out, err = run_cli("predict", "image", photo, "--session", session, "--json")
    assert rc == 0, err
    assert "warning:" in err and str(latest) in err and "iteration 2" in err and "Traceback" not in err
    assert json.loads(out.splitlines()[0])["label"] in ("0", "1", "5")

    older = session / "checkpoints" / "training-00002.pt"
    blob = bytearray(older.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the tensor data
    older.write_bytes(bytes(blob))
    rc, _, err = run_cli("predict", "image", photo, "--session", session)
    one_error_line(rc, err, latest)


# -- 6. more than 1000 iterations ----------------------------------------------------------------------------------
def test_more_than_a_thousand_iterations_asked_are_trained(tmp_path):
    data = copy_digits(tmp_path / "digits", per_label=4)
    out = tmp_path / "Digits.mlmodel"
    rc, stdout, err = train(data, out, "--iterations", 1003, "--checkpoint-interval", 1000, "--validation", "none")
    assert rc == 0, err
    assert json.loads((out.with_suffix(".session") / "session.json").read_text())["iteration"] == 1003
    assert "Training: 1003/1003" in err


# -- 16. file names that are not UTF-8 -----------------------------------------------------------------------------
def test_predict_names_a_non_utf8_file_and_goes_on_under_strict_utf8_stdout(trained, tmp_path):
    data, session = trained
    photo = next((data / "1").iterdir())
    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"))  # Latin-1 bytes, as argv delivers them
    shutil.copy(photo, odd)
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone-\xff.jpg"))
    raw = io.BytesIO()
    strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    rc, _, err = run_cli("predict", "image", odd, missing, photo, "--session", session, "--json", stdout=strict)
    lines = [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]
    assert rc == 1, err  # the missing one failed; the others were predicted
    assert [("error" in line) for line in lines] == [False, True, False]
    assert lines[0]["file"].endswith("caf\\xe9.jpg") and lines[0]["label"] in ("0", "1", "5")
    assert lines[1]["file"].endswith("gone-\\xff.jpg") and "gone-\\xff.jpg" in lines[1]["error"]
    assert lines[2]["file"] == str(photo)
    assert "gone-\\xff.jpg" in err and "Traceback" not in err


# -- 18. nothing is left behind after a data error ------------------------------------------------------------------
def test_a_data_error_leaves_no_session_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "Digits.mlmodel"
    rc, _, err = train(empty, out, "--iterations", 2)
    one_error_line(rc, err, empty)
    assert not out.with_suffix(".session").exists() and sorted(os.listdir(tmp_path)) == ["empty"]

    one_label = copy_digits(tmp_path / "one", labels=("0",), per_label=3)
    rc, _, err = train(one_label, out, "--iterations", 2, "--validation", "none")
    one_error_line(rc, err, "only one label")
    assert not out.with_suffix(".session").exists()

    # in a folder of the user's own, only the session's files go
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    rc, _, err = train(empty, out, "--session", mine, "--iterations", 2)
    one_error_line(rc, err, empty)
    assert sorted(os.listdir(mine)) == ["keep.txt"]
