"""MediaPipe worker processes as a user's own script meets them (issue 11 points 8 and 9).

Each test runs a real plain script (no `if __name__ == "__main__":` guard, as users write them) in a
subprocess that extracts hand keypoints with two worker processes of real MediaPipe.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""\
    import os
    import sys

    with open(os.environ["RUNS_FILE"], "a") as f:  # one line each time this top-level code runs
        f.write(f"{os.getpid()}\\n")

    from createml_widgets import samples
    from createml_widgets.features.hand_keypoints import extract_image_keypoints

    folders = sorted(d for d in samples.sign_language_digits().iterdir() if d.is_dir())
    photos = sorted(p for d in folders for p in d.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = photos[: int(os.environ.get("PHOTOS", "48"))] * int(os.environ.get("REPEAT", "1"))

    def progress(done, total):
        print(f"PROGRESS {done} {total}", flush=True)

    found = extract_image_keypoints(photos, workers=2, progress=progress)
    print("FOUND", sum(o is not None and not isinstance(o, Exception) for o in found), len(found), flush=True)
    """)


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RUNS_FILE=str(tmp_path / "runs.txt"), **extra)
    env.pop("CREATEML_WIDGETS_WORKERS", None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_a_script_without_a_main_guard_runs_its_top_level_code_once(tmp_path, context):
    script = tmp_path / "train_my_hands.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=_env(tmp_path, CREATEML_WIDGETS_MP_CONTEXT=context))
    assert out.returncode == 0, out.stderr[-3000:]
    runs = (tmp_path / "runs.txt").read_text().split()
    # Before: the fork server (which preloaded __main__) and each worker ran the script again: the
    # extraction was done two or three times over.
    assert len(runs) == 1, f"the script's top-level code ran {len(runs)} times (pids {runs})"
    assert "FOUND 48 48" in out.stdout or "FOUND 47 48" in out.stdout, out.stdout[-500:]


@pytest.mark.slow
def test_a_module_run_with_dash_m_is_not_imported_again_by_the_workers(tmp_path):
    (tmp_path / "mytraining").mkdir()
    (tmp_path / "mytraining" / "__init__.py").write_text("")
    (tmp_path / "mytraining" / "run.py").write_text(SCRIPT)
    env = _env(tmp_path)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{tmp_path}"
    out = subprocess.run([sys.executable, "-m", "mytraining.run"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len((tmp_path / "runs.txt").read_text().split()) == 1


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_kill_9_of_the_parent_during_extraction_leaves_no_process_behind(tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    # 200 photos x 4: long enough that the kill lands in the middle of the extraction.
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=_env(tmp_path, PHOTOS="200", REPEAT="4"))
    descendants: dict[int, str] = {}
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            if line.startswith("PROGRESS"):
                done, total = map(int, line.split()[1:])
                for child in parent.children(recursive=True):
                    with_cmd = " ".join(child.cmdline())
                    descendants[child.pid] = with_cmd
                workers = [c for c in descendants.values() if "forkserver" in c or "multiprocessing" in c]
                if done >= 40 and len(descendants) >= 3 and workers:
                    break
            assert time.monotonic() < deadline, "the extraction never got going"
        assert done < total, "the extraction finished before the kill: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 10  # "within seconds"
        while time.monotonic() < deadline and not all(_gone(pid) for pid in descendants):
            time.sleep(0.2)
        left = {pid: cmd[:120] for pid, cmd in descendants.items() if not _gone(pid)}
        # Before: the fork server, a worker and the resource tracker stayed (~670 MB), 2 of 2 tries.
        assert not left, f"still running 10 s after the parent was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in descendants:  # only processes this test started
            if not _gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
