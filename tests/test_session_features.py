"""A session's features are kept as mapped chunks, and image training reads its matrix mapped (issue 15)."""
from __future__ import annotations

import gc
import io
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from createml_widgets.errors import SessionError
from createml_widgets.nets.logistic import LogisticRegressionTrainer
from createml_widgets.session import FeatureStore
from createml_widgets.tasks.image_classifier import _tensors

DIM = 1280


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _filled(tmp_path, n: int, per_chunk: int) -> FeatureStore:
    store = FeatureStore(tmp_path)
    for start in range(0, n, per_chunk):
        rows = _rows(min(per_chunk, n - start), start)
        for j, row in enumerate(rows):
            store.add(f"k{start + j:06d}", row)
        del rows
        store.flush()
    return store


def test_flushed_features_are_mapped_and_read_back_mapped(tmp_path):
    store = _filled(tmp_path, 300, 100)
    store.add("pose", np.ones((21, 3), np.float32))  # another shape, small: kept in memory
    store.flush()
    assert store.features.mapped == 300 and len(store.features) == 301
    assert isinstance(store.features["k000150"], np.memmap)
    np.testing.assert_array_equal(store.features["k000150"], _rows(100, 100)[50])

    again = FeatureStore(tmp_path)
    again.load(json.loads(json.dumps(store.to_dict())))
    assert again.features.mapped == 300 and len(again.features) == 301
    np.testing.assert_array_equal(again.features["k000299"], _rows(100, 200)[99])
    np.testing.assert_array_equal(again.features["pose"], np.ones((21, 3)))

    # rows of one chunk in order: that chunk's array itself; others: gathered into a mapped temporary file
    one = again.matrix([f"k{i:06d}" for i in range(120, 180)])
    assert isinstance(one, np.memmap) and np.shares_memory(one, again.features._blocks[1])
    keys = [f"k{i:06d}" for i in (250, 3, 101, 299, 0)]
    gathered = again.features.matrix(keys, tmp_path / "features", to_file_from=0)
    assert isinstance(gathered, np.memmap) and gathered.dtype == np.float32
    np.testing.assert_array_equal(gathered, np.stack([again.features[k] for k in keys]))
    small = again.matrix(keys)  # 25 KB: stacked in memory
    assert not isinstance(small, np.memmap)
    np.testing.assert_array_equal(small, gathered)
    assert not any(p.name.startswith(".matrix") for p in (tmp_path / "features").iterdir())  # never named


def test_chunks_written_before_are_still_read(tmp_path):
    """A session written by an earlier version (one .npz member per key) resumes with its features."""
    rows = _rows(3, 7)
    (tmp_path / "features").mkdir()
    np.savez(tmp_path / "features" / "chunk-00000.npz", **{f"old{i}": r for i, r in enumerate(rows)})
    store = FeatureStore(tmp_path)
    store.load({"chunks": ["features/chunk-00000.npz"], "failed": {}, "sha256": {}})
    assert store.features.mapped == 0
    np.testing.assert_array_equal(store.features["old2"], rows[2])
    store.add("new", rows[0])
    store.flush()
    np.testing.assert_array_equal(store.matrix(["old1", "new"]), rows[[1, 0]])


def test_a_damaged_chunk_is_named(tmp_path):
    store = _filled(tmp_path, 40, 40)
    path = tmp_path / "features" / "chunk-00000.npz"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("rows.0.npy")
    magic = data.index(b"\x93NUMPY", info.header_offset)
    data[magic:magic + 6] = b"garbag"  # the rows member's .npy header
    path.write_bytes(bytes(data))
    state = store.to_dict()
    with pytest.raises(SessionError, match="chunk-00000.npz is damaged.*SHA-256"):
        FeatureStore(tmp_path).load(state)
    with pytest.raises(SessionError, match="chunk-00000.npz is damaged.*magic"):
        FeatureStore(tmp_path).load({**state, "sha256": {}})
    path.write_bytes(bytes(data[:len(data) // 2]))  # cut short
    with pytest.raises(SessionError, match="chunk-00000.npz is damaged.*BadZipFile"):
        FeatureStore(tmp_path).load({**state, "sha256": {}})


def _anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_image_training_holds_no_second_copy_of_the_features(tmp_path):
    """20,000 photos' features (98 MiB): the training matrix is mapped, and building the logistic
    trainer and stepping it grows the process's own memory by a fraction of the matrix, where
    stacking the store's rows (what training did before) grows it by the whole matrix."""
    n, labels = 20_000, [str(i) for i in range(10)]
    store = _filled(tmp_path, n, 2_000)
    items = [SimpleNamespace(key=f"k{i:06d}", label=labels[i % 10], variant=None, name=f"{i}.jpg")
             for i in range(n)]
    matrix_kib = n * DIM * 4 // 1024
    gc.collect()

    before = _anon_kib()
    stacked = np.stack([store.features[i.key] for i in items])
    assert _anon_kib() - before > 0.8 * matrix_kib  # the measurement sees a copy
    del stacked
    gc.collect()

    before = _anon_kib()
    x, y = _tensors(items[:n - 2_000], store, labels, {"skipped_files": []})
    vx, vy = _tensors(items[n - 2_000:], store, labels)
    assert _mapped(x) and _mapped(vx)
    trainer = LogisticRegressionTrainer(x, y, vx, vy, len(labels))
    assert np.shares_memory(trainer.X, x.numpy())
    peak = 0
    for _ in range(2):
        trainer.step()
        peak = max(peak, _anon_kib() - before)
    assert trainer.validation_metrics()["validation_accuracy"] >= 0
    assert peak < 0.25 * matrix_kib, f"training grew anonymous memory by {peak} KiB for a {matrix_kib} KiB matrix"
    np.testing.assert_array_equal(x[12_345].numpy(), store.features["k012345"])
    assert torch.equal(y[:3], torch.tensor([0, 1, 2]))


def _mapped(t: torch.Tensor) -> bool:
    """Whether the tensor's memory lies in a file mapping of this process (/proc/self/maps)."""
    address = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= address < hi:
                return len(parts) >= 6 and parts[5].startswith("/")  # a file's path, not [heap] or anonymous
    return False


def test_a_session_without_a_folder_gathers_a_big_matrix_into_a_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    store = FeatureStore(None)
    rows = _rows(3_500, 1)  # 17 MiB: over the 16 MiB from which the matrix goes to a file
    for i, row in enumerate(rows):
        store.add(f"k{i}", row)
    assert store.flush() is None and store.features.mapped == 0  # nothing written for the session
    keys = [f"k{i}" for i in range(3_499, -1, -1)]
    m = store.matrix(keys)
    assert isinstance(m, np.memmap)
    np.testing.assert_array_equal(m, rows[::-1])
    assert list(tmp_path.iterdir()) == []  # the file has no name
    assert not isinstance(store.matrix(keys[:100]), np.memmap)
