"""Shared fixtures. Tests use real data (the bundled photos) and real models throughout."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One feature cache for the whole run, never the user's own (subprocesses inherit it).
_CACHE = Path(tempfile.mkdtemp(prefix="cmlw-test-cache-"))
os.environ["CREATEML_WIDGETS_CACHE"] = str(_CACHE)
os.environ.setdefault("PYTHONUNBUFFERED", "1")
# Test processes side by side (pytest-xdist, `make test`'s TEST_WORKERS) share the cores: each gets its share of
# torch's (OpenMP) threads, set before torch is first imported: with two processes of two OpenMP threads each on
# two cores, the hand action fixture (60 iterations) took 427 s, threads waiting on cores the other process held.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

SAMPLES = Path(__file__).resolve().parent.parent / "createml_widgets" / "samples"
DIGITS = SAMPLES / "sign-language-digits"


@pytest.fixture(scope="session")
def cancel_at():
    """`cancel_at(task, session, n)`: resumes `session` and cancels the job once training reports iteration `n`
    (JobCancelledError expected); returns the iteration the session stopped at."""
    from createml_widgets import JobCancelledError, MLPhase

    def run(task, session, n: int) -> int:
        job = task.resume(session)
        job.on_progress(lambda p: job.cancel() if p.phase == MLPhase.TRAINING and p.item_count >= n else None)
        with pytest.raises(JobCancelledError):
            job.result(timeout=300)
        assert job.is_canceled
        return session.iteration

    return run


@pytest.fixture(scope="session")
def digits_dir() -> Path:
    """The 200 bundled sign-language digit photos, one folder per label."""
    return DIGITS


@pytest.fixture()
def small_digits(tmp_path) -> Path:
    """A copy of 3 labels x 8 photos, for tests that modify the data."""
    root = tmp_path / "digits"
    for label in ("0", "1", "5"):
        (root / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:8]:
            shutil.copy(photo, root / label / photo.name)
    return root


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
