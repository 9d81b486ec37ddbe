"""Trainer(threads=AUTO) leaves out the cores other processes are busy on (issue 15's oversubscription)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from createml_widgets.nets import HandPoseGCN
from createml_widgets.nets.training import (
    AUTO,
    TensorData,
    Trainer,
    _other_runnable,
    _own_running_threads,
    idle_cores,
    usable_cores,
)

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"


def test_other_runnable_reads_the_running_count_and_leaves_out_the_reader():
    assert _other_runnable("0.52 0.58 0.59 5/1183 40123\n") == 4
    assert _other_runnable("0.00 0.00 0.00 1/200 7\n") == 0
    assert _other_runnable("0.00 0.00 0.00 0/200 7\n") == 0
    assert _other_runnable("0.52 0.58 0.59 5/1183 40123\n", own_running=3) == 2  # our own busy threads


def test_own_running_threads_counts_a_busy_thread_of_ours():
    import threading

    stop = threading.Event()

    def spin():  # a product releases the GIL: the thread runs beside the reading one
        a = torch.rand(400, 400)
        while not stop.is_set():
            a @ a

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        time.sleep(0.05)
        counts = [_own_running_threads() for _ in range(20)]
    finally:
        stop.set()
        t.join()
    assert max(counts) >= 2 and min(counts) >= 1, counts
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads /proc/loadavg (Linux)")
def test_idle_cores_drops_by_the_processes_spinning_beside_it():
    cores = len(os.sched_getaffinity(0))
    assert 1 <= idle_cores() <= cores
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        time.sleep(0.5)  # both are running
        busy = idle_cores()
        assert busy <= max(1, cores - 2), (busy, cores)
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_auto_trainer_counts_once_and_trains_and_evaluates_on_that_count(monkeypatch):
    import createml_widgets.nets.training as training

    seen = []
    real_step = Trainer._step

    def recording(self):
        seen.append(torch.get_num_threads())
        return real_step(self)

    counts = iter([1, 2, 2, 2])
    monkeypatch.setattr(training, "idle_cores", lambda: next(counts))
    monkeypatch.setattr(Trainer, "_step", recording)
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(16, 1, 3, 21, generator=g), torch.randint(0, 3, (16,), generator=g))
    trainer = Trainer(HandPoseGCN(3), data, data, threads=AUTO)
    assert trainer.threads == 1
    trainer.step()
    trainer.step()  # the load changed: still the count of the start (torch's answers depend on it)
    assert seen == [1, 1]
    assert torch.get_num_threads() == before
    net_calls = []
    trainer.net.register_forward_pre_hook(lambda *_: net_calls.append(torch.get_num_threads()))
    trainer.validation_metrics()
    assert net_calls == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, "all", 1.5])
def test_threads_must_be_a_count_none_or_auto(bad):
    data = TensorData(torch.rand(4, 1, 3, 21), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="threads="):
        Trainer(HandPoseGCN(2), data, threads=bad)
