"""Torch modules: the image backbone, classifier heads and the hand-skeleton graph networks."""
from .efficientnet import EfficientNetLiteFeatures, load_efficientnet_lite
from .gcn import HAND_EDGES, HandActionGCN, HandPoseGCN, normalize_keypoints
from .heads import LinearHead, MLPHead

__all__ = [
    "EfficientNetLiteFeatures", "load_efficientnet_lite", "HAND_EDGES", "HandActionGCN", "HandPoseGCN",
    "normalize_keypoints", "LinearHead", "MLPHead",
]
