"""What the Core ML and the ONNX exports share: Create ML's names, keys and descriptions, the metadata
a model carries, and the torch modules both trace (the classifier wrappers and the centre crop + resize).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..metadata import MLModelMetadata

VERSION_METADATA_KEY = "com.github.createml_widgets.version"
# Creator-defined keys Create ML itself writes (apps and Xcode's preview read them).
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
WINDOW_SIZE_KEY = "Prediction Window Size"
FRAME_RATE_KEY = "Target Frame Rate"
PREVIEW_TYPES = {"image": "imageClassifier", "hand pose": "handPoseClassifier", "hand action": "handActionClassifier"}
# Keys only Create ML may write: its version stamps would claim Create ML made the file.
RESERVED_METADATA_PREFIX = "com.apple.createml."

# Vision's joint order (the last dimension of `poses`).
HAND_JOINT_NAMES = (
    "wrist", "thumbCMC", "thumbMP", "thumbIP", "thumbTip", "indexMCP", "indexPIP", "indexDIP", "indexTip",
    "middleMCP", "middlePIP", "middleDIP", "middleTip", "ringMCP", "ringPIP", "ringDIP", "ringTip",
    "littleMCP", "littlePIP", "littleDIP", "littleTip",
)

IMAGE_INPUT_DESCRIPTION = "Input image to be classified"
CLASS_LABEL_DESCRIPTION = "Most likely image category"
CLASS_PROBS_DESCRIPTION = "Probability of each category"
LABEL_PROBS_DESCRIPTION = "A dictionary of labels and the corresponding confidences."


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("createml-widgets")
    except PackageNotFoundError:
        pass
    try:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):  # pragma: no cover
        return "unknown"


def _check_labels(class_labels: Iterable) -> list[str]:
    labels = [str(label) for label in class_labels]
    if not labels:
        raise ValueError("a classifier needs at least one class label")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"class labels must be unique; repeated: {duplicates}")
    return labels


def poses_description(window: int, action: bool) -> str:
    """The description Create ML gives the `poses` input of a hand pose / hand action model."""
    frames = "1 frame" if window == 1 else f"{window} frames"
    what = "A sequence of hand poses to classify." if action else "A hand pose to classify."
    return (
        f"{what} Its multiarray encoding uses the first dimension to index time over {frames}. "
        "The second dimension indexes x, y, and confidence of hand pose keypoint locations. "
        f"The last dimension indexes the keypoint type, ordered as {', '.join(HAND_JOINT_NAMES)}."
    )


def creator_metadata(kind: str, window: int = 1, frame_rate: float = 30.0) -> dict[str, str]:
    """Create ML's creator-defined keys for a task kind ("image", "hand pose", "hand action")."""
    keys = {PREVIEW_TYPE_KEY: PREVIEW_TYPES[kind]}
    if kind != "image":
        keys[WINDOW_SIZE_KEY] = str(int(window))
        keys[FRAME_RATE_KEY] = repr(float(frame_rate))
    return keys


# ----------------------------------------------------------------------------------------------
# metadata


def _metadata_fields(metadata) -> dict:
    if metadata is None:
        return {}
    if isinstance(metadata, Mapping):
        fields = dict(metadata)
        if "shortDescription" in fields and "short_description" not in fields:
            fields["short_description"] = fields["shortDescription"]
        unknown = set(fields) - {"author", "short_description", "shortDescription", "license", "version",
                                 "additional"}
        if unknown:
            raise ValueError(f"unknown model metadata keys: {sorted(unknown)}")
        return fields
    fields = {}
    for name in ("author", "short_description", "license", "version", "additional"):
        if not hasattr(metadata, name):
            raise TypeError(
                f"metadata must be an MLModelMetadata or a dict; {type(metadata).__name__} has no {name!r}"
            )
        fields[name] = getattr(metadata, name)
    return fields


def metadata_entries(metadata: MLModelMetadata | Mapping | None = None, training_info: Mapping | None = None,
                     creator_keys: Mapping | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(standard fields, user-defined entries) a model file carries, every value a string.

    The standard fields are author, short_description, license and version (those given); the entries are
    `metadata.additional`, `training_info` and `creator_keys` (Create ML's own keys, e.g. "Target Frame
    Rate"), then `com.github.createml_widgets.version`. `com.apple.createml.*` keys are refused: they say
    which Create ML version made a file, and this one was not made by Create ML.
    """
    fields = _metadata_fields(metadata)
    standard = {name: str(fields[name]) for name in ("author", "short_description", "license", "version")
                if fields.get(name) is not None}
    user: dict[str, str] = {}
    for source in (fields.get("additional") or {}, training_info or {}, creator_keys or {}):
        if not isinstance(source, Mapping):
            raise TypeError(f"expected a dict of strings, got {type(source).__name__}")
        for key, value in source.items():
            if str(key).startswith(RESERVED_METADATA_PREFIX):
                raise ValueError(
                    f"metadata key {key!r}: {RESERVED_METADATA_PREFIX}* keys record the Create ML version that "
                    "made a model, and this model was not made by Create ML; use another key name"
                )
            if value is not None:
                user[str(key)] = str(value)
    user[VERSION_METADATA_KEY] = _package_version()
    return standard, user


def _path_error(err: OSError, path: Path, what: str, kind: str = "Core ML") -> OSError:
    """`err` again (same class and errno), its message naming the model file and what failed."""
    message = f"cannot write the {kind} model {str(path)!r}: {what} ({err.strerror or err})"
    if err.errno is not None:
        return type(err)(err.errno, message)
    return type(err)(message)


# ----------------------------------------------------------------------------------------------
# torch modules both exports trace


class _ImageClassifier(nn.Module):
    """(1, 3, S, S) preprocessed image -> (1, K) probabilities."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(image)), dim=1)


class _KeypointClassifier(nn.Module):
    """(T, 3, 21) poses, no batch dimension -> (1, K) probabilities."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(poses.unsqueeze(0)), dim=1)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy, so exporting never disturbs a model that is still training."""
    try:
        module = copy.deepcopy(module)
    except Exception as err:  # noqa: BLE001 - e.g. a custom extractor holding an unpicklable handle
        raise TypeError(f"cannot export {type(module).__name__}: it cannot be copied ({err})") from err
    return module.to("cpu", torch.float32).eval()


def _image_preprocessing(backbone: nn.Module) -> tuple[nn.Module, float, float]:
    """The backbone to trace and Core ML's image scale and bias for it.

    A backbone with a `normalize` attribute (EfficientNetLiteFeatures) computes (255 x - 127) / 128
    itself when normalize is on; that step moves into Core ML's preprocessing (pixel p in 0..255
    -> (p - 127) / 128) and the copy traced runs with normalize off. A backbone without the
    attribute takes RGB in [0, 1]: scale 1/255, no bias.
    """
    copy_ = _frozen_copy(backbone)
    if hasattr(copy_, "normalize"):
        copy_.normalize = False
        return copy_, 1.0 / 128.0, -127.0 / 128.0
    return copy_, 1.0 / 255.0, 0.0


class _CentreCropResize(nn.Module):
    """(1, C, H, W) -> (1, C, S, S): bilinear samples of the centred min(H, W) square at the cell
    centres of an S x S grid (`image_embedding.crop_grid`), for any H, W traced dynamically.

    Written with tent-weight matrices (relu(1 - |grid - pixel|)) so the sizes stay symbolic in
    the traced graph: the ML program and the ONNX graph take any image size.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)
        self.register_buffer("cells", torch.arange(self.size, dtype=torch.float32) + 0.5)

    def _weights(self, line: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        pixels = torch.cumsum(torch.ones_like(line), 0) - 1.0  # 0 .. n-1, n symbolic
        length = pixels[-1:] + 1.0
        grid = (length - side) * 0.5 - 0.5 + self.cells * (side / self.size)
        return torch.relu(1.0 - torch.abs(grid.unsqueeze(1) - pixels.unsqueeze(0)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        column, row = image[0, 0, :, 0], image[0, 0, 0, :]
        height = torch.ones_like(column).sum().reshape(1)
        width = torch.ones_like(row).sum().reshape(1)
        side = torch.minimum(height, width)
        ry, rx = self._weights(column, side), self._weights(row, side)
        return torch.matmul(torch.matmul(ry, image), rx.transpose(0, 1))


def _is_action_net(net: nn.Module, window: int) -> bool:
    try:
        from ..nets import HandActionGCN, HandPoseGCN
    except ImportError:  # pragma: no cover
        return window > 1
    if isinstance(net, HandActionGCN):
        return True
    if isinstance(net, HandPoseGCN):
        return False
    return window > 1
