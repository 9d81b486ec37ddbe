"""Hand pose GCN variants on the sample photos, 10 stratified splits (issue 16; figures in README.md).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.pose_variants VARIANT [LABEL_SMOOTHING] [SPLITS] 2>/dev/null
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.pose_variants baseline

Each variant replaces the network (or the loss) that `MLHandPoseClassifier` trains, for this process only,
and is scored with `accuracy.pose_accuracy` on the splits `accuracy.run_handpose` uses (seeds 0..SPLITS-1).
"baseline" scores `wrist_relative` + `mlp_fit_predict` on the same splits. Nothing here is a default.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import accuracy as A


def palm_normalize(x: torch.Tensor) -> torch.Tensor:
    """Centre each hand on its wrist, scale by the wrist -> middle MCP length (a bone, not the RMS spread)."""
    xy, conf = x[:, :, 0:2, :], x[:, :, 2:3, :]
    centred = xy - xy[:, :, :, 0:1]
    d = centred[:, :, :, 9:10]
    scale = torch.sqrt((d * d).sum(dim=2, keepdim=True) + 1e-6)
    return torch.cat([centred / scale, torch.clamp(conf * 1e4, 0.0, 1.0)], dim=2)


def palm4_normalize(x: torch.Tensor) -> torch.Tensor:
    """Centre each hand on its wrist, scale by the mean wrist -> MCP length of the four fingers."""
    xy, conf = x[:, :, 0:2, :], x[:, :, 2:3, :]
    centred = xy - xy[:, :, :, 0:1]
    m = centred[:, :, :, 5:18:4]  # joints 5, 9, 13, 17
    scale = torch.sqrt((m * m).sum(dim=2, keepdim=True) + 1e-6).mean(dim=3, keepdim=True)
    return torch.cat([centred / scale, torch.clamp(conf * 1e4, 0.0, 1.0)], dim=2)


def wrist_only(x: torch.Tensor) -> torch.Tensor:
    """The baseline's representation: joint - wrist, not scaled (x 10 to bring it near unit size)."""
    xy, conf = x[:, :, 0:2, :], x[:, :, 2:3, :]
    return torch.cat([(xy - xy[:, :, :, 0:1]) * 10.0, torch.clamp(conf * 1e4, 0.0, 1.0)], dim=2)


VARIANTS = {
    "default": {},
    "palm": {"norm": palm_normalize},
    "palm4": {"norm": palm4_normalize},
    "relonly": {"norm": wrist_only},
    "inbn": {"input_bn": True},
    "palm4_inbn": {"norm": palm4_normalize, "input_bn": True},
    "drop5": {"dropout": 0.5},
    "small": {"channels": (32, 32, 64)},
    "palm4_drop5": {"norm": palm4_normalize, "dropout": 0.5},
    "palm4_drop5_small": {"norm": palm4_normalize, "dropout": 0.5, "channels": (32, 32, 64)},
    "flip": {},  # the default network with HORIZONTALLY_FLIP augmentation
    "iter20": {},  # the default network, 20 iterations (default 80)
    "iter40": {},
    "bones": {"bones": True},  # joints and bone vectors (joint - parent) as 5 input channels
    "hybrid": {"mlp": True},  # the GCN's logits plus a 2-layer MLP's on the same normalised joints
    "bones_hybrid": {"bones": True, "mlp": True},
    "ens3": {"ensemble": 3},  # three GCNs (different initial weights) trained together, logits averaged
}


def variant_net(num_classes: int, norm=None, input_bn: bool = False, bones: bool = False, mlp: bool = False,
                ensemble: int = 0, **kw) -> nn.Module:
    """A HandPoseGCN with another input normalisation and/or a BatchNorm1d over the 63 inputs."""
    from createml_widgets.nets import gcn

    if ensemble:
        class Ensemble(nn.Module):
            def __init__(self):
                super().__init__()
                self.members = nn.ModuleList(gcn.HandPoseGCN(num_classes, **kw) for _ in range(ensemble))

            def forward(self, poses):
                return torch.stack([m(poses) for m in self.members]).mean(0)

        return Ensemble()

    if bones or mlp:
        class Streams(gcn.HandPoseGCN):
            def __init__(self):
                super().__init__(num_classes, **kw)
                if bones:
                    self.graph[0] = gcn.GraphConv(5, self.graph[0].mix.out_channels)
                    self.register_buffer("bone_m", gcn.bone_matrix())
                self.mlp = nn.Sequential(nn.Linear(42, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, num_classes)) \
                    if mlp else None

            def forward(self, poses):
                x = gcn.normalize_keypoints(poses)  # (N, 1, 3, 21)
                g = x
                if bones:
                    xy = x[:, :, 0:2, :]
                    g = torch.cat([xy, torch.matmul(xy, self.bone_m), x[:, :, 2:3, :]], dim=2)
                out = self.fc(self.dropout(self.graph(g.permute(0, 2, 1, 3)).flatten(1)))
                if self.mlp is not None:
                    out = out + self.mlp(x[:, 0, 0:2, :].flatten(1))
                return out

        return Streams()

    class Variant(gcn.HandPoseGCN):
        def __init__(self):
            super().__init__(num_classes, **kw)
            self.norm = norm or gcn.normalize_keypoints
            self.in_bn = nn.BatchNorm1d(63) if input_bn else None

        def forward(self, poses):
            x = self.norm(poses)
            if self.in_bn is not None:
                x = self.in_bn(x.reshape(-1, 63)).reshape(-1, 1, 3, 21)
            return self.fc(self.dropout(self.graph(x.permute(0, 2, 1, 3)).flatten(1)))

    return Variant()


def main(argv: list[str]) -> None:
    name = argv[0]
    smoothing = float(argv[1]) if len(argv) > 1 else 0.0
    seeds = range(int(argv[2]) if len(argv) > 2 else 10)
    _, labels = A._photos()
    kp = A.photo_keypoints()
    t, accs = time.perf_counter(), []
    if name == "baseline":
        classes = sorted(set(labels.tolist()))
        y = np.array([classes.index(v) for v in labels])
        feats = A.wrist_relative(kp)
        for s in seeds:
            tr, te = A.stratified(labels, A.POSE_TRAIN_PER_CLASS, s)
            accs.append(float((A.mlp_fit_predict(feats[tr], y[tr], feats[te], len(classes), s) == y[te]).mean()))
    else:
        import createml_widgets.tasks.hand_pose_classifier as hpc
        from createml_widgets.data.validation import ValidationData
        from createml_widgets.nets import training

        kw = VARIANTS[name]
        hpc.HandPoseGCN = lambda k: variant_net(k, **kw)
        if smoothing:
            training.Trainer._loss = lambda self, lg, y: F.cross_entropy(
                lg, y, weight=self.class_weights, label_smoothing=smoothing)
        HP = hpc.MLHandPoseClassifier
        params = HP.ModelParameters(validation=ValidationData.none(), augmentation_options=(
            HP.ImageAugmentationOptions.HORIZONTALLY_FLIP if name == "flip" else HP.ImageAugmentationOptions(0)),
            **({"maximum_iterations": int(name[4:])} if name.startswith("iter") else {}))
        for s in seeds:
            tr, te = A.stratified(labels, A.POSE_TRAIN_PER_CLASS, s)
            accs.append(A.pose_accuracy(kp, labels, tr, te, params))
    load = open("/proc/loadavg").read().split()[:3]
    print(f"{name} smoothing={smoothing}: {statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f} "
          f"{[round(a, 3) for a in accs]}; first 3 {statistics.mean(accs[:3]):.3f} ± {statistics.stdev(accs[:3]):.3f}; "
          f"{time.perf_counter() - t:.0f} s, load {' '.join(load)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
