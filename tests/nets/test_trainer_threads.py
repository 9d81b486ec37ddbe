"""Trainer(threads=AUTO) leaves out the cores other processes are busy on (issue 15's oversubscription)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from createml_widgets.nets import HandPoseGCN
from createml_widgets.nets.training import AUTO, TensorData, Trainer, _other_runnable, idle_cores

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"


def test_other_runnable_reads_the_running_count_and_leaves_out_the_reader():
    assert _other_runnable("0.52 0.58 0.59 5/1183 40123\n") == 4
    assert _other_runnable("0.00 0.00 0.00 1/200 7\n") == 0
    assert _other_runnable("0.00 0.00 0.00 0/200 7\n") == 0


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


def test_auto_trainer_sets_the_idle_count_for_its_step_and_restores_torchs(monkeypatch):
    import createml_widgets.nets.training as training

    seen = []
    real_step = Trainer._step

    def recording(self):
        seen.append(torch.get_num_threads())
        return real_step(self)

    monkeypatch.setattr(training, "idle_cores", lambda: 1)
    monkeypatch.setattr(Trainer, "_step", recording)
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(16, 1, 3, 21, generator=g), torch.randint(0, 3, (16,), generator=g))
    trainer = Trainer(HandPoseGCN(3), data, threads=AUTO)
    trainer.step()
    assert seen == [1]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, "all", 1.5])
def test_threads_must_be_a_count_none_or_auto(bad):
    data = TensorData(torch.rand(4, 1, 3, 21), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="threads="):
        Trainer(HandPoseGCN(2), data, threads=bad)
