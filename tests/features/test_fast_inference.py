"""The fast image backbones (ONNX Runtime, fused torch) against eager torch, on the bundled photos.

No mocking: the fallbacks are exercised by forcing a backend (env var or constructor option), by a
backbone the fast path cannot fold, and by a damaged cached ONNX file.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from createml_widgets.data.items import Item
from createml_widgets.features import fast_inference as fi
from createml_widgets.features.image_embedding import ImageEmbeddingExtractor, load_backbone, preprocess
from createml_widgets.features.image_io import load_image
from createml_widgets.nets import EfficientNetLiteFeatures
from createml_widgets.tasks.image_classifier import CustomFeatureExtractor, FeatureExtractorType

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime/onnx not installed")


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """Two photos of each digit."""
    return [p for d in sorted(DIGITS.iterdir()) if d.is_dir() for p in sorted(d.glob("*.JPG"))[:2]]


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteFeatures:
    return EfficientNetLiteFeatures("efficientnet-lite0").eval()


@pytest.fixture(scope="module")
def eager_features(photos, lite0) -> np.ndarray:
    x = torch.from_numpy(np.stack([preprocess(load_image(p), 224) for p in photos]))
    with torch.inference_mode():
        return lite0(x).numpy()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(fi.BACKEND_ENV, raising=False)


def _assert_equivalent(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    assert fi.cosine_similarity(got, ref).min() > 0.99999
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * float(np.abs(ref).max()))


def _extract(extractor: ImageEmbeddingExtractor, paths) -> list:
    with extractor:
        return extractor.extract([Item(p, "x") for p in paths])


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_ort), "torch"])
def test_fast_backends_match_eager_on_real_photos(backend, photos, lite0, eager_features):
    runner = fi.make_runner(lite0, backend)
    assert runner.backend == backend
    x = np.stack([preprocess(load_image(p), 224) for p in photos])
    _assert_equivalent(runner(x), eager_features)
    # batch composition does not matter: one image at a time gives the same features
    _assert_equivalent(np.concatenate([runner(x[i:i + 1]) for i in range(3)]), eager_features[:3])


def test_default_extractor_is_fast_and_equivalent(photos, eager_features):
    ex = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1))
    rows = _extract(ex, photos)
    assert ex.runner.backend == ("onnxruntime" if HAS_ORT else "torch")
    _assert_equivalent(np.stack(rows), eager_features)


def test_env_var_forces_eager(photos, eager_features, monkeypatch):
    monkeypatch.setenv(fi.BACKEND_ENV, "eager")
    ex = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1))
    rows = _extract(ex, photos)
    assert ex.runner.backend == "eager"
    np.testing.assert_allclose(np.stack(rows), eager_features, rtol=1e-5, atol=1e-6)


def test_constructor_option_overrides_env_var(photos, eager_features, monkeypatch):
    monkeypatch.setenv(fi.BACKEND_ENV, "onnxruntime")
    ex = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1), backend="torch")
    rows = _extract(ex, photos[:4])
    assert ex.runner.backend == "torch"
    _assert_equivalent(np.stack(rows), eager_features[:4])


def test_unknown_backend_is_rejected(monkeypatch):
    with pytest.raises(ValueError, match="inference backend"):
        fi.requested_backend("tpu")
    monkeypatch.setenv(fi.BACKEND_ENV, "gpu")
    with pytest.raises(ValueError, match=fi.BACKEND_ENV):
        fi.requested_backend()


def test_features_cached_by_one_backend_are_the_ones_another_computes(tmp_path, photos, eager_features):
    """The cache's id leaves the backend out because every backend computes the same features: features
    a fast backend cached answer an eager extractor (which then never loads its network) and equal what it
    computes itself; the id still tells apart what does change the features (the revision)."""
    from createml_widgets.features.cache import CachingExtractor, FeatureCache

    fe = FeatureExtractorType.scene_print(1)
    cache = FeatureCache(tmp_path / "shared")
    fast = ImageEmbeddingExtractor(fe, backend="onnxruntime" if HAS_ORT else "torch")
    eager = ImageEmbeddingExtractor(fe, backend="eager")
    assert fast.id == eager.id
    assert ImageEmbeddingExtractor(FeatureExtractorType.scene_print(2), backend="eager").id != eager.id
    items = lambda ex: [Item(p, "x").resolve_key(ex.id) for p in photos[:4]]  # noqa: E731
    with CachingExtractor(fast, cache) as caching:
        stored = caching.extract(items(fast))
    assert caching.misses == 4 and fast.runner.backend != "eager"
    with CachingExtractor(eager, cache) as caching:
        answered = caching.extract(items(eager))
    assert caching.hits == 4 and caching.misses == 0 and eager.runner is None  # the network never loaded
    np.testing.assert_array_equal(np.stack(answered), np.stack(stored))
    _assert_equivalent(np.stack(answered), eager_features[:4])  # what the eager backend computes itself


def test_unfoldable_backbone_falls_back_to_eager(photos):
    """A custom network has no fast path: "auto" runs it eagerly, unchanged."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    fe = FeatureExtractorType.custom(CustomFeatureExtractor(net, input_size=64))
    ex = ImageEmbeddingExtractor(fe)
    rows = _extract(ex, photos[:3])
    assert ex.runner.backend == "eager"
    x = torch.from_numpy(np.stack([preprocess(load_image(p), 64) for p in photos[:3]]))
    with torch.inference_mode():
        np.testing.assert_allclose(np.stack(rows), net(x).numpy(), rtol=1e-6, atol=1e-6)


@needs_ort
def test_onnx_is_cached_under_the_cache_root_and_rebuilt_if_damaged(tmp_path, lite0, photos, eager_features):
    net = fi.fold_efficientnet_lite(lite0)
    path = fi.onnx_cache_path(net)
    assert path.parent == tmp_path / "cache" / "onnx"
    assert "efficientnet-lite0" in path.name and torch.__version__.split("+")[0] in path.name
    fi.make_runner(lite0, "onnxruntime")
    assert path.stat().st_size > 1_000_000
    path.write_bytes(b"not an onnx file")  # a truncated write, a disk error...
    runner = fi.make_runner(lite0, "onnxruntime")
    assert runner.backend == "onnxruntime"
    x = np.stack([preprocess(load_image(p), 224) for p in photos[:2]])
    _assert_equivalent(runner(x), eager_features[:2])


@needs_ort
def test_unwritable_cache_still_runs_onnxruntime(tmp_path, monkeypatch, lite0, photos, eager_features):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("CREATEML_WIDGETS_CACHE", str(blocker))
    runner = fi.make_runner(lite0, "onnxruntime")
    assert runner.backend == "onnxruntime"
    x = np.stack([preprocess(load_image(p), 224) for p in photos[:2]])
    _assert_equivalent(runner(x), eager_features[:2])


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_ort), "torch"])
def test_lite1_matches_eager(backend, photos):
    model = EfficientNetLiteFeatures("efficientnet-lite1").eval()
    x = np.stack([preprocess(load_image(p), 240) for p in photos[:4]])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    runner = fi.make_runner(model, backend)
    assert runner.backend == backend
    _assert_equivalent(runner(x), ref)


def test_pipelined_extract_keeps_order_and_per_file_errors(tmp_path, photos, eager_features):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = list(photos[:5]) + [broken] + list(photos[5:11])
    ex = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1), batch_size=32)
    ex.pipeline_batch = 4  # several network runs inside one extract() call
    rows = _extract(ex, paths)
    assert isinstance(rows[5], Exception) and "broken.jpg" in str(rows[5])
    good = np.stack(rows[:5] + rows[6:])
    _assert_equivalent(good, eager_features[:11])


def test_embed_without_entering_builds_the_runner(photos, eager_features):
    """The prediction path sets `backbone` and calls `embed` directly."""
    fe = FeatureExtractorType.scene_print(1)
    ex = ImageEmbeddingExtractor(fe)
    ex.backbone = load_backbone(fe).eval()
    x = np.stack([preprocess(load_image(p), 224) for p in photos[:2]])
    _assert_equivalent(ex.embed(x), eager_features[:2])
    assert ex.runner is not None
    ex.backbone = load_backbone(fe).eval()  # a new backbone gets a new runner
    first = ex.runner
    ex.embed(x[:1])
    assert ex.runner is not first


@needs_ort
def test_run_time_failure_of_the_fast_path_falls_back_to_eager(photos):
    """The ONNX graph has a fixed 224x224 input; another size fails in ONNX Runtime, eager torch copes."""
    fe = FeatureExtractorType.scene_print(1)
    ex = ImageEmbeddingExtractor(fe)
    ex.prepare()
    assert ex.runner.backend == "onnxruntime"
    x = np.stack([preprocess(load_image(p), 160) for p in photos[:2]])
    got = ex.embed(x)
    assert ex.runner.backend == "eager"
    with torch.inference_mode():
        ref = ex.backbone(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_folded_torch_net_hooks_see_every_rounded_tensor_and_replace_it(photos, lite0, eager_features):
    """feature_map's hooks (benchmarks/int8.py's fake quantization) run each conv and see each tensor once."""
    net = fi.FoldedTorchNet(fi.fold_efficientnet_lite(lite0))
    x = torch.from_numpy(np.stack([preprocess(load_image(p), 224) for p in photos[:4]]))
    seen, convs = [], []

    def conv(i, layer, t):
        convs.append(i)
        return layer(t)

    def observe(name, t):
        seen.append(name)
        return t

    with torch.inference_mode():
        hooked = net.feature_map(x, conv=conv, observe=observe).mean(dim=(2, 3)).numpy()
        last = seen[-1]
        doubled = net.feature_map(x, observe=lambda name, t: t * 2 if name == last else t)
    _assert_equivalent(hooked, eager_features[:4])
    assert convs == list(range(len(net.convs)))
    n_res = sum(net.add)
    assert len(seen) == len(net.convs) + n_res and n_res > 0
    assert {s[:3] for s in seen} == {"act", "con", "res"}
    first_res = net.add.index(True)
    assert seen[first_res + 1] == f"res{first_res}"  # right after the tensor it sums (none before it)
    # a replaced tensor is what the next layer reads: the last layer doubled doubles the map
    np.testing.assert_allclose(doubled.mean(dim=(2, 3)).numpy(), 2 * hooked, rtol=1e-4, atol=1e-4)
