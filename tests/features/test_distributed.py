"""Feature extraction on a real Dask LocalCluster (two worker processes): same features and models as
locally, a worker killed mid-run loses nothing, cancel / kill -9 and resume redo no finished item."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from createml_widgets import (  # noqa: E402
    MLHandActionClassifier,
    MLHandPoseClassifier,
    MLImageClassifier,
    MLPhase,
    MLTrainingSessionParameters,
    ValidationData,
    use_cluster,
)
from createml_widgets.errors import ParameterError  # noqa: E402
from createml_widgets.features import distributed as cmw_dask  # noqa: E402
from createml_widgets.session import JobCancelledError  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "createml_widgets" / "samples" / "sign-language-digits"


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _copy_digits(root: Path, labels, per_label: int) -> Path:
    for label in labels:
        (root / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:per_label]:
            shutil.copy(photo, root / label / photo.name)
    return root


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from createml_widgets.samples.make_clips import make_dataset

    root = tmp_path_factory.mktemp("dask-clips")
    make_dataset(root, clips_per_class=2, seed=3, classes=["wave", "zoom"])
    return root


def _run(task, data, params, cache: Path, monkeypatch, cluster=None, sp=None):
    """Train with a feature cache of its own, here (cluster=None) or on `cluster`."""
    import torch

    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(cache))
    torch.manual_seed(0)  # the hand networks are initialised from torch's global generator
    with use_cluster(cluster):
        job = task.train(data, params, sp)
        return job.result(timeout=600), job.session


def _same_features(a, b, atol=0.0):
    assert set(a.features.features) == set(b.features.features)
    assert a.features.failed == b.features.failed
    for key, value in a.features.features.items():
        np.testing.assert_allclose(value, b.features.features[key], rtol=0, atol=atol)


def _cases(tmp_path, clips):
    image = MLImageClassifier
    pose = MLHandPoseClassifier
    action = MLHandActionClassifier
    return {
        "image": (image, image.DataSource.labeled_directories(DIGITS), image.ModelParameters(max_iterations=10)),
        "handpose": (pose, pose.DataSource.labeled_directories(_copy_digits(tmp_path / "d", "0158", 8)),
                     pose.ModelParameters(maximum_iterations=5, validation=ValidationData.none())),
        "handaction": (action, action.DataSource.labeled_directories(clips),
                       action.ModelParameters(prediction_window_size=30, maximum_iterations=3,
                                              validation=ValidationData.none())),
    }


@pytest.mark.parametrize("task", ["image", "handpose", "handaction"])
def test_the_three_tasks_give_the_same_features_and_models_as_locally(task, client, clips, tmp_path, monkeypatch):
    cls, data, params = _cases(tmp_path, clips)[task]
    local_model, local = _run(cls, data, params, tmp_path / "local-cache", monkeypatch)
    dask_model, remote = _run(cls, data, params, tmp_path / "dask-cache", monkeypatch, client)
    assert remote.summary["extraction"]["extracted"] == local.summary["extraction"]["extracted"] > 0
    # MediaPipe answers bit for bit; the image backbone runs on other thread counts on the workers.
    _same_features(local, remote, atol=1e-5 if task == "image" else 0.0)
    a, b = local_model.training_metrics, dask_model.training_metrics
    assert a.accuracy == b.accuracy
    keys = sorted(local.features.features)
    feats = [local.features.features[k] for k in keys]
    np.testing.assert_allclose(local_model._predict_features(feats), dask_model._predict_features(feats), atol=1e-3)
    assert (np.argmax(local_model._predict_features(feats), 1) == np.argmax(dask_model._predict_features(feats), 1)).all()
    # Every result went into the cache as it arrived: a second run here extracts nothing.
    _, again = _run(cls, data, params, tmp_path / "dask-cache", monkeypatch)
    assert again.summary["extraction"]["extracted"] == 0


def test_each_worker_loads_its_extractor_once_and_keeps_it(client, tmp_path, monkeypatch):
    data = MLHandPoseClassifier.DataSource.labeled_directories(_copy_digits(tmp_path / "d", "01", 6))
    params = MLHandPoseClassifier.ModelParameters(maximum_iterations=2, validation=ValidationData.none())
    _run(MLHandPoseClassifier, data, params, tmp_path / "c1", monkeypatch, client)

    def extractors():
        from createml_widgets.features import distributed as d

        return {k: [id(e) for e in v] for k, v in d._idle.items()}

    first = client.run(extractors)
    _run(MLHandPoseClassifier, data, params, tmp_path / "c2", monkeypatch, client)  # nothing cached: extracts again
    second = client.run(extractors)
    assert any(first.values())
    for worker, kept in first.items():
        for key, ids in kept.items():
            assert len(ids) == 1  # one thread per worker: one extractor
            assert second[worker][key] == ids  # the same object, not loaded again


def test_a_worker_killed_mid_run_loses_nothing(client, tmp_path, monkeypatch):
    root = _copy_digits(tmp_path / "d", "0123456789", 10)
    data = MLHandPoseClassifier.DataSource.labeled_directories(root)
    params = MLHandPoseClassifier.ModelParameters(maximum_iterations=2, validation=ValidationData.none())
    _, reference = _run(MLHandPoseClassifier, data, params, tmp_path / "local", monkeypatch)

    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed_at = []

    def kill_once(progress):
        if progress.phase == MLPhase.EXTRACTING_FEATURES and not killed_at and 0 < progress.item_count < 100:
            os.kill(victim, signal.SIGKILL)
            killed_at.append(progress.item_count)

    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "dask"))
    with use_cluster(client):
        job = MLHandPoseClassifier.train(data, params)
        job.on_progress(kill_once)
        job.result(timeout=600)
    assert killed_at and killed_at[0] < 100  # the worker died with work left
    assert job.session.summary["extraction"]["extracted"] == 100
    _same_features(reference, job.session)
    assert victim not in client.run(os.getpid).values()  # the run finished on the worker that was left


def test_cancel_then_resume_redoes_no_finished_item(client, tmp_path, monkeypatch):
    data = MLImageClassifier.DataSource.labeled_directories(DIGITS)
    params = MLImageClassifier.ModelParameters(max_iterations=5)
    sp = MLTrainingSessionParameters(tmp_path / "session", checkpoint_interval=1)
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "cache"))
    with use_cluster(client):
        session = MLImageClassifier.make_training_session(data, params, sp)
        job = MLImageClassifier.resume(session)
        job.on_progress(lambda p: job.cancel() if p.phase == MLPhase.EXTRACTING_FEATURES else None)
        started = time.monotonic()
        with pytest.raises(JobCancelledError):
            job.result(timeout=600)
        assert time.monotonic() - started < 60
        cached = len(list((tmp_path / "cache" / "features").rglob("*.npy")))
        kept = len(session.features.features)
        assert 0 < kept <= cached < 200  # stopped early; finished batches kept

        restored = MLImageClassifier.restore_training_session(sp)
        assert len(restored.features.features) == kept
        job2 = MLImageClassifier.resume(restored)
        model = job2.result(timeout=600)
    summary = job2.session.summary["extraction"]
    assert summary["resumed_from"] == kept
    assert summary["from_cache"] == cached - kept
    assert summary["extracted"] == 200 - cached
    assert len(job2.session.features.features) == 200 and model.training_metrics.accuracy > 0.5


CALLER = textwrap.dedent("""
    import os, sys
    # The caller's main: a Dask worker that re-ran it would add a line here.
    with open(os.environ["MARKER"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    from createml_widgets import MLImageClassifier
    data = MLImageClassifier.DataSource.labeled_directories(sys.argv[1])
    sp = MLImageClassifier.ModelParameters(max_iterations=3)
    from createml_widgets import MLTrainingSessionParameters
    job = MLImageClassifier.train(data, sp, MLTrainingSessionParameters(sys.argv[2], checkpoint_interval=1))
    job.result()
    print("EXTRACTION", job.session.summary["extraction"])
""")


def test_kill_9_of_the_caller_then_resume_on_the_cluster_named_by_the_environment(client, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    cache = tmp_path / "cache"
    env = dict(os.environ, CREATEML_WIDGETS_CACHE=str(cache), MARKER=str(tmp_path / "marker"),
               CREATEML_WIDGETS_SCHEDULER=client.scheduler.address, PYTHONPATH=str(REPO))
    args = [sys.executable, str(script), str(DIGITS), str(tmp_path / "session")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("*.npy"))) < 40:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    at_kill = len(list(cache.rglob("*.npy")))
    assert at_kill < 200

    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("EXTRACTION"))
    summary = eval(line.split(" ", 1)[1])  # a dict of ints printed by the script
    assert summary["items"] == 200
    assert summary["extracted"] <= 200 - at_kill  # nothing finished before the kill was redone
    assert summary["from_cache"] + summary["resumed_from"] >= at_kill
    # The caller's script ran exactly twice (two processes): no worker imported it.
    assert len((tmp_path / "marker").read_text().split()) == 2


def test_without_shared_storage_the_bytes_go_and_errors_name_the_users_file(client, tmp_path, monkeypatch):
    root = _copy_digits(tmp_path / "d", "05", 6)
    broken = root / "0" / "broken.jpg"
    broken.write_bytes(b"not a photo")
    data = MLImageClassifier.DataSource.labeled_directories(root)
    params = MLImageClassifier.ModelParameters(max_iterations=3, validation=ValidationData.none())
    _, local = _run(MLImageClassifier, data, params, tmp_path / "local", monkeypatch)
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "bytes"))
    with use_cluster(client, shared_storage=False):
        model = MLImageClassifier.train(data, params).result(timeout=600)
    remote = model._summary
    assert remote["extraction"]["extracted"] == 13
    [skipped] = model.training_metrics.skipped
    assert skipped["path"] == str(broken) and str(broken) in skipped["reason"]
    assert "createml-widgets-batch" not in skipped["reason"]
    assert list(local.features.failed.values()) == [skipped["reason"]]


def test_a_scheduler_that_is_not_there_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(cmw_dask, "CONNECT_TIMEOUT_S", 2)
    monkeypatch.setenv("CREATEML_WIDGETS_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "cache"))
    data = MLHandPoseClassifier.DataSource.labeled_directories(_copy_digits(tmp_path / "d", "01", 2))
    job = MLHandPoseClassifier.train(data, MLHandPoseClassifier.ModelParameters(maximum_iterations=1))
    with pytest.raises(cmw_dask.ClusterError, match=r"tcp://127\.0\.0\.1:9.*CREATEML_WIDGETS_SCHEDULER"):
        job.result(timeout=120)
    with pytest.raises(ParameterError, match="use_cluster"):
        use_cluster(42)
    with pytest.raises(ParameterError, match="shared_storage"):
        use_cluster(None, shared_storage="sometimes")
