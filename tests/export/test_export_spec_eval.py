"""The numpy spec interpreter itself: numerics against torch, weight files, unsupported types."""
from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder
from export_helpers import photo

from createml_widgets.export import evaluate, load
from createml_widgets.export.spec_eval import conv2d, pool2d, read_blob


@pytest.mark.parametrize(("cin", "cout", "k", "stride", "dilation", "groups", "pads"), [
    (3, 8, 3, 1, 1, 1, (1, 1, 1, 1)),
    (3, 8, 3, 2, 1, 1, (0, 1, 0, 1)),
    (8, 8, 5, 2, 1, 8, (2, 2, 2, 2)),  # depthwise
    (8, 16, 3, 1, 1, 8, (1, 1, 1, 1)),  # depthwise with channel multiplier
    (8, 12, 3, 1, 2, 4, (2, 2, 2, 2)),  # grouped, dilated
    (6, 4, 1, 1, 1, 1, (0, 0, 0, 0)),  # pointwise
    (4, 4, (9, 1), 1, 1, 1, (4, 4, 0, 0)),  # temporal kernel of the action GCN
])
def test_conv2d_matches_torch(cin, cout, k, stride, dilation, groups, pads):
    g = torch.Generator().manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, cin, 11, 13, generator=g)
    w = torch.randn(cout, cin // groups, kh, kw, generator=g)
    b = torch.randn(cout, generator=g)
    expected = F.conv2d(F.pad(x, (pads[2], pads[3], pads[0], pads[1])), w, b, stride, 0, dilation, groups)
    got = conv2d(x.numpy(), w.numpy(), b.numpy(), (stride, stride), (dilation, dilation), pads, groups)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool2d_matches_torch(mode):
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    fn = F.max_pool2d if mode == "max" else F.avg_pool2d
    expected = fn(x, 3, 2, padding=1, **({} if mode == "max" else {"count_include_pad": False}))
    got = pool2d(x.numpy(), (3, 3), (2, 2), (1, 1, 1, 1), mode, exclude_padding=True)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)


def test_blob_reader_agrees_with_coremltools_storage_reader(pose_models, tmp_path):
    """Our reading of weight.bin matches coremltools' own C++ reader for every float const."""
    storage = pytest.importorskip("coremltools.libmilstoragepython")
    from createml_widgets.export import write_model

    package = write_model(pose_models["mlprogram"], tmp_path / "Hand.mlpackage")
    weights = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader = storage._BlobStorageReader(str(weights))
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    main = spec.mlProgram.functions["main"]
    checked = 0
    for op in main.block_specializations[main.opset].operations:
        value = op.attributes["val"] if op.type == "const" else None
        if value is None or value.WhichOneof("value") != "blobFileValue":
            continue
        dims = [d.constant.size for d in value.type.tensorType.dimensions]
        ours = read_blob(weights, value.blobFileValue.offset, np.float32, int(np.prod(dims)))
        theirs = np.asarray(reader.read_float_data(value.blobFileValue.offset))
        np.testing.assert_array_equal(ours, theirs)
        checked += 1
    assert checked >= 5


def _builder_model(layer: str):
    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(1, 3, 8, 8))], [("y", None)], disable_rank5_shape_mapping=True)
    if layer == "upsample":
        builder.add_upsample("up", 2, 2, "x", "y")
    else:
        builder.add_lrn("lrn", "x", "y", alpha=1e-4, beta=0.75, local_size=3)
    return ct.models.MLModel(builder.spec)


@pytest.mark.parametrize("layer", ["upsample", "lrn"])
def test_unsupported_layer_names_its_type(layer):
    with pytest.raises(NotImplementedError, match=layer):
        evaluate(_builder_model(layer), {"x": np.zeros((1, 3, 8, 8), np.float32)})


def test_unsupported_mil_operation_names_its_type(pose_models):
    model = pose_models["mlprogram"]
    spec = model.get_spec()
    main = spec.mlProgram.functions["main"]
    for op in main.block_specializations[main.opset].operations:
        if op.type == "relu":
            op.type = "fancy_relu"
            break
    else:
        pytest.fail("the pose network has no relu")
    with pytest.raises(NotImplementedError, match="fancy_relu"):
        evaluate(spec, {"poses": np.zeros((1, 3, 21), np.float32)}, weights_dir=model.weights_dir)


def test_builder_network_with_bgr_preprocessing_and_more_layers():
    """A hand-built network (BGR image, same-padded strided conv, leaky ReLU, max pool, flatten,
    inner product, softmax) against the same computation in torch."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(5, 64)).astype(np.float32)
    builder = NeuralNetworkBuilder([("image", datatypes.Array(3, 16, 16))], [("probs", None)], mode="classifier",
                                   disable_rank5_shape_mapping=True)
    builder.add_convolution("conv", 3, 4, 3, 3, 2, 2, "same", 1, w.transpose(2, 3, 1, 0), b, True,
                            input_name="image", output_name="c")
    builder.add_activation("act", "LEAKYRELU", "c", "a", params=[0.1])
    builder.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "a", "p")
    builder.add_flatten_to_2d("flat", "p", "f", axis=1)
    builder.add_inner_product("fc", fc, None, 64, 5, False, "f", "logits")
    builder.add_softmax_nd("softmax", "logits", "probs", axis=-1)
    builder.set_pre_processing_parameters(image_input_names=["image"], is_bgr=True, red_bias=-0.5,
                                          green_bias=-0.25, blue_bias=0.1, image_scale=1 / 255)
    builder.set_class_labels(["a", "b", "c", "d", "e"], predicted_feature_name="label",
                             prediction_blob="probs")
    model = ct.models.MLModel(builder.spec)
    spec = model.get_spec()
    image = photo("6", size=16)
    pixels = np.asarray(image, np.float32)
    bgr = torch.from_numpy(pixels[:, :, ::-1].copy()).permute(2, 0, 1)[None] / 255.0
    bgr = bgr + torch.tensor([0.1, -0.25, -0.5]).view(1, 3, 1, 1)
    x = F.conv2d(F.pad(bgr, (0, 1, 0, 1)), torch.from_numpy(w), torch.from_numpy(b), stride=2)
    x = F.max_pool2d(F.leaky_relu(x, 0.1), 2, 2).flatten(1)
    expected = torch.softmax(x @ torch.from_numpy(fc).T, dim=1)[0].numpy()
    result = load(spec).predict({"image": image})
    assert spec.description.input[0].type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR
    got = np.array([result["probs"][k] for k in "abcde"])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result["label"] == "abcde"[int(np.argmax(expected))]


def test_image_must_have_the_model_size(image_models):
    with pytest.raises(ValueError, match="224 x 224"):
        evaluate(image_models["neuralnetwork"], {"image": photo("1", size=100)})
