"""Live prediction: frames per second through `createml_widgets.live.LivePredictor`, per task, on
640x480 video of real hands (the bundled photos moving, `samples.make_clips.render_frames`).

The models are trained first on the bundled samples (a few iterations: speed does not depend on how
well they learnt). Each task is timed over the same frames after a warm-up pass (MediaPipe's start);
the browser round trip is measured in tests/browser/test_camera_live.py (artifacts/camera-live.json).
"""
from __future__ import annotations

import shutil
import time

from . import SAMPLES, Context, median, target_text

TARGET_HAND_POSE_FPS = 20.0


def _frames(seconds: float):
    from createml_widgets.samples.make_clips import digit_photos, render_frames

    return render_frames(digit_photos("5")[:1], "wave", fps=30, seconds=seconds, size=(640, 480), seed=0)


def _models(ctx: Context):
    from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier

    root = ctx.scratch / "live"
    photos = root / "photos"
    for label in ("1", "5"):
        (photos / label).mkdir(parents=True, exist_ok=True)
        for p in sorted((SAMPLES / "sign-language-digits" / label).iterdir())[:10]:
            shutil.copy(p, photos / label / p.name)
    clips = root / "clips"
    for label in ("wave", "zoom"):
        (clips / label).mkdir(parents=True, exist_ok=True)
        for p in sorted((SAMPLES / "hand-action-clips" / label).glob("*.mp4"))[:3]:
            shutil.copy(p, clips / label / p.name)
    IC, HP, HA = MLImageClassifier, MLHandPoseClassifier, MLHandActionClassifier
    return {
        "image": IC(IC.DataSource.labeled_directories(photos),
                    IC.ModelParameters(max_iterations=5, validation=IC.ValidationData.none())),
        "hand_pose": HP(HP.DataSource.labeled_directories(photos),
                        HP.ModelParameters(maximum_iterations=5, validation=HP.ValidationData.none())),
        "hand_action": HA(HA.DataSource.labeled_directories(clips),
                          HA.ModelParameters(maximum_iterations=5, validation=HA.ValidationData.none())),
    }


def run(ctx: Context) -> None:
    from createml_widgets.live import LivePredictor

    frames = _frames(2.0 if ctx.quick else 4.0)
    models = _models(ctx)
    rounds = 1 if ctx.quick else 3
    for task, model in models.items():
        fps, per_frame = [], []
        for _ in range(rounds):
            with LivePredictor(model) as live:
                for i, frame in enumerate(frames[:15]):  # warm-up: MediaPipe's graphs, torch's first call
                    live.predict_frame(frame, i / 30)
                live.reset()
                began = time.perf_counter()
                answers = 0
                for i, frame in enumerate(frames):
                    result = live.predict_frame(frame, 100 + i / 30)
                    answers += result.label is not None
                    per_frame.append(result.elapsed)
                fps.append(len(frames) / (time.perf_counter() - began))
        note = f"{len(frames)} frames 640x480, median of {rounds} passes; answered {answers}/{len(frames)} in the last"
        if task == "hand_action":
            note += f" (window {model._window} frames: no answer before it is full)"
        target = target_text(median(fps) >= TARGET_HAND_POSE_FPS, f">= {TARGET_HAND_POSE_FPS:g} fps") \
            if task == "hand_pose" else ""
        ctx.add("live", f"{task}: frames per second", median(fps), "fps", note, target)
        ctx.add("live", f"{task}: per frame (median)", median(per_frame) * 1000, "ms")
    # What MediaPipe alone (tracking mode, the same frames) allows: the bound on the hand tasks.
    from createml_widgets.features.hand_keypoints import HandKeypointDetector

    alone = []
    for _ in range(rounds):
        with HandKeypointDetector(video=True) as detector:
            for frame in frames[:15]:
                detector.detect(frame)
            detector.reset()
            began = time.perf_counter()
            for frame in frames:
                detector.detect(frame)
            alone.append(len(frames) / (time.perf_counter() - began))
    ctx.add("live", "MediaPipe alone (tracking mode): frames per second", median(alone), "fps",
            "the same frames; the hand tasks' bound")
