"""How many MediaPipe worker processes extraction starts: the argument, else $CREATEML_WIDGETS_WORKERS,
else the CPU count (Binder sets the variable: its sessions see the host's CPUs, not their own)."""
from __future__ import annotations

import os

import pytest

from createml_widgets.features.hand_keypoints import WORKERS_ENV, _resolve_workers, parallel_map


def test_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert _resolve_workers(2) == 2


def test_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, " 2 ")
    assert _resolve_workers(None) == 2
    monkeypatch.delenv(WORKERS_ENV)
    assert _resolve_workers(None) == max(1, os.cpu_count() or 1)


@pytest.mark.parametrize("bad", ["two", "0", "-1"])
def test_a_bad_setting_is_an_error_naming_it(monkeypatch, bad):
    monkeypatch.setenv(WORKERS_ENV, bad)
    with pytest.raises(ValueError, match="CREATEML_WIDGETS_WORKERS|workers"):
        _resolve_workers(None)


def _square(state, x):
    return x * x


def test_one_worker_from_the_environment_runs_in_this_process(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "1")
    made = []
    assert parallel_map(_square, list(range(40)), lambda: made.append(os.getpid()) or "detector") == [x * x for x in range(40)]
    assert made == [os.getpid()]  # one state, made here: no worker processes were started
