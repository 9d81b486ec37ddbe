"""The feature cache key: file content + extractor + augmentation, never the path.

Each test trains on real photos against one private cache that a first run filled, and reads
what the run took from the cache and what it extracted (`session.summary["extraction"]`).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from createml_widgets import MLImageClassifier, ValidationData
from createml_widgets.data.items import Item
from createml_widgets.features.cache import CachedFailure, CachingExtractor, FeatureCache

IC = MLImageClassifier
LABELS = ("0", "1", "5")


def _copy(digits_dir, root):
    for label in LABELS:
        (root / label).mkdir(parents=True)
        for photo in sorted((digits_dir / label).iterdir())[:8]:
            shutil.copy(photo, root / label / photo.name)
    return root


def _extraction(root, **kw):
    params = IC.ModelParameters(max_iterations=2, validation=ValidationData.none(), **kw)
    job = IC.train(IC.DataSource.labeled_directories(root), params)
    job.result(timeout=600)
    return job.session.summary.get("extraction", {"from_cache": None, "extracted": 0})


@pytest.fixture(scope="module")
def warm(tmp_path_factory, digits_dir):
    """(cache folder, photos folder): 3 labels x 8 photos, their features already in the cache."""
    cache = tmp_path_factory.mktemp("cache")
    root = _copy(digits_dir, tmp_path_factory.mktemp("photos") / "digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CREATEML_WIDGETS_CACHE", str(cache))
        first = _extraction(root)
    assert (first["from_cache"], first["extracted"]) == (0, 24)
    return cache, root


@pytest.fixture()
def cache_env(warm, monkeypatch):
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(warm[0]))
    return warm


def test_same_files_hit_the_cache(cache_env):
    _, root = cache_env
    assert (lambda e: (e["from_cache"], e["extracted"]))(_extraction(root)) == (24, 0)


def test_copies_at_new_paths_hit_the_cache(cache_env, tmp_path):
    _, root = cache_env
    moved = tmp_path / "elsewhere"
    for label in LABELS:  # new folder, new file names, same bytes
        (moved / f"label-{label}").mkdir(parents=True)
        for i, photo in enumerate(sorted((root / label).iterdir())):
            shutil.copy(photo, moved / f"label-{label}" / f"copy{i}.jpeg")
    e = _extraction(moved)
    assert (e["from_cache"], e["extracted"]) == (24, 0)


def test_one_edited_byte_misses_only_that_file(cache_env, tmp_path):
    _, root = cache_env
    edited = tmp_path / "edited"
    shutil.copytree(root, edited)
    photo = sorted((edited / "5").iterdir())[3]
    data = bytearray(photo.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte of the compressed picture
    photo.write_bytes(bytes(data))
    e = _extraction(edited)
    assert (e["from_cache"], e["extracted"]) == (23, 1)


def test_an_augmentation_extracts_only_the_augmented_variants(cache_env):
    _, root = cache_env
    e = _extraction(root, augmentation=IC.ImageAugmentationOptions.CROP)
    assert (e["items"], e["from_cache"], e["extracted"]) == (48, 24, 24)
    again = _extraction(root, augmentation=IC.ImageAugmentationOptions.CROP)
    assert (again["from_cache"], again["extracted"]) == (48, 0)


def test_another_extractor_revision_misses_everything(cache_env):
    _, root = cache_env
    rev2 = IC.ModelAlgorithmType.transfer_learning(IC.FeatureExtractorType.scene_print(revision=2))
    e = _extraction(root, algorithm=rev2)
    assert (e["from_cache"], e["extracted"]) == (0, 24)


class _Counting:
    """A tiny real extractor: the mean colour of each file's bytes, counting what it was asked."""

    id = "test:byte-mean"

    def __init__(self):
        self.asked = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def extract(self, items):
        self.asked += len(items)
        out = []
        for item in items:
            data = np.frombuffer(open(item.source, "rb").read(), dtype=np.uint8)
            out.append(ValueError("empty file") if not len(data) else np.array([data.mean()], np.float32))
        return out


def test_caching_extractor_stores_values_and_not_plain_failures(tmp_path, digits_dir):
    photos = sorted((digits_dir / "2").iterdir())[:3]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    items = [Item(p, "2").resolve_key(_Counting.id) for p in [*photos, empty]]
    cache = FeatureCache(tmp_path / "c")
    inner = _Counting()
    first = CachingExtractor(inner, cache).extract(items)
    assert isinstance(first[-1], ValueError) and (inner.asked, cache.get(items[-1].key)) == (4, None)
    again = CachingExtractor(inner, cache)
    second = again.extract(items)
    assert (again.hits, again.misses, inner.asked) == (3, 1, 5)  # only the failure is retried
    for a, b in zip(first[:3], second[:3]):
        assert np.array_equal(a, b)


def test_cacheable_failures_are_remembered_and_damaged_entries_recomputed(tmp_path, digits_dir):
    class NoHand(Exception):
        cacheable = True

    photo = sorted((digits_dir / "4").iterdir())[0]
    item = Item(photo, "4").resolve_key(_Counting.id)
    cache = FeatureCache(tmp_path / "c")
    inner = _Counting()
    good = CachingExtractor(inner, cache).extract([item])[0]
    path = cache._path(item.key, ".npy")
    path.write_bytes(path.read_bytes()[:-2])  # as if a crash cut the file short
    assert cache.get(item.key) is None
    again = CachingExtractor(inner, cache).extract([item])[0]
    assert inner.asked == 2 and np.array_equal(again, good) and np.array_equal(cache.get(item.key), good)

    cache.put("k1", NoHand("no hand in it"))
    hit = cache.get("k1")
    assert isinstance(hit, CachedFailure) and "no hand in it" in str(hit)
    cache.put("k2", np.arange(4, dtype=np.float32))
    assert np.array_equal(cache.get("k2"), np.arange(4, dtype=np.float32))
    assert FeatureCache(tmp_path / "c", enabled=False).get("k2") is None
    cache.clear()
    assert cache.get("k1") is None and cache.get("k2") is None


def test_an_edit_that_keeps_size_and_modification_time_still_changes_the_digest(tmp_path, digits_dir):
    from createml_widgets.features.cache import file_digest

    photo = tmp_path / "photo.jpg"
    shutil.copy(sorted((digits_dir / "8").iterdir())[0], photo)
    before = file_digest(photo)
    st = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-10] ^= 0xFF
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))  # e.g. a tool that preserves timestamps
    assert photo.stat().st_size == st.st_size and photo.stat().st_mtime_ns == st.st_mtime_ns
    assert file_digest(photo) != before
    assert file_digest(tmp_path / ".." / tmp_path.name / "photo.jpg") == file_digest(photo)  # any spelling
