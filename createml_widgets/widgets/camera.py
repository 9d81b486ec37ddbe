"""Camera and LivePreview: the browser's camera in the page (anywidget; the ES module is camera.js).

* `Camera(task, picker=...)`: **Snap** saves a photo (image tasks) and **Record** a clip of a chosen
  length (hand action: JPEG frames with their times, written as an MP4 at `clip_fps`) into the data
  folder under the chosen label — through the picker's
  `save_uploads`, so the confined root and the naming rules are the uploads' own (`uploads/<label>/`),
  and the picker (and the counts shown here) update at once.
* `LivePreview(model)`: frames go to the kernel as binary JPEG messages (downscaled to `frame_max_side`,
  at most `max_fps` a second, one in flight: while the kernel works, the camera's frames are dropped,
  never queued); `createml_widgets.live.LivePredictor` answers each, and the browser draws the label,
  the confidence, the hand's skeleton (from the returned keypoints) and, for hand action, how full the
  window is. fps and latency (frame captured → answer drawn) are shown and kept in `fps`/`latency_ms`.

The camera is opened only when the user presses *Start camera*. Without a camera, with permission
refused, or on an insecure page (not https, not localhost) the widget says which and what to do
(`camera_state`: "insecure", "unsupported", "denied", "no-camera", "busy" or "error"); the rest of the
app is not affected.
"""
from __future__ import annotations

import html
import io
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anywidget
import numpy as np
import traitlets

from ._paths import relative_to_root, sanitize_filename
from ._tasks import task_info

if TYPE_CHECKING:
    from ..live import LivePredictor
    from ..tasks._base import ClassifierTask
    from ._tasks import TaskInfo
    from .data_source_picker import DataSourcePicker

log = logging.getLogger(__name__)
ESM = Path(__file__).with_name("camera.js")
CSS = """
.cmlw-camera { font-size: 13px; }
.cmlw-camera-controls { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin: 4px 0; }
.cmlw-camera-controls button { padding: 2px 12px; min-height: 28px; cursor: pointer; }
.cmlw-camera-label-input { width: 160px; }
.cmlw-camera-seconds-input { width: 56px; }
.cmlw-camera-stage { position: relative; width: 480px; max-width: 100%; background: #111; border-radius: 6px;
  overflow: hidden; }
.cmlw-camera-video, .cmlw-camera-overlay { width: 100%; display: block; }
.cmlw-camera-overlay { position: absolute; left: 0; top: 0; height: 100%; pointer-events: none; }
.cmlw-live-label { position: absolute; left: 8px; top: 8px; padding: 2px 8px; border-radius: 4px;
  background: rgba(0,0,0,.6); color: #fff; font-size: 18px; font-weight: 600; }
.cmlw-camera-camera .cmlw-live-label { display: none; }
.cmlw-live-label:empty { display: none; }
.cmlw-camera-problem:not(:empty) { color: #c62828; margin: 6px 0; max-width: 640px; }
.cmlw-camera-message { margin: 4px 0; }
.cmlw-camera-message.cmlw-camera-ok { color: #1a7f37; }
.cmlw-camera-message.cmlw-camera-failed { color: #c62828; }
.cmlw-camera-count { display: inline-block; margin-right: 8px; padding: 0 6px; background: #eef4fd;
  border-radius: 3px; }
.cmlw-live-window { position: relative; width: 480px; max-width: 100%; height: 18px; background: #e5e5ea;
  border-radius: 4px; margin-top: 4px; overflow: hidden; }
.cmlw-live-window-fill { height: 100%; width: 0; background: #0071e3; }
.cmlw-live-window-text { position: absolute; left: 6px; top: 0; font-size: 12px; line-height: 18px; }
.cmlw-live-meter { color: #6e6e73; margin-top: 4px; }
"""
CAMERA_STATES = ("off", "starting", "on", "insecure", "unsupported", "denied", "no-camera", "busy", "error")


class _CameraView(anywidget.AnyWidget):
    _esm = ESM
    _css = CSS
    _kind = traitlets.Unicode("camera").tag(sync=True)
    camera_state = traitlets.Unicode("off", help="what the browser says of its camera: " + ", ".join(CAMERA_STATES)
                                     ).tag(sync=True)
    camera_error = traitlets.Unicode("").tag(sync=True)
    mirror = traitlets.Bool(True, help="show the stream mirrored, as a selfie view (frames are sent as seen)"
                            ).tag(sync=True)


def decode_jpeg(data: bytes) -> np.ndarray:
    """An RGB uint8 array from JPEG bytes; ValueError for anything else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("JPEG", "PNG", "WEBP"):
                raise ValueError(f"expected a JPEG frame, got {im.format}")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"not a readable JPEG frame ({err})") from None


class Camera(_CameraView):
    """The browser's camera: Snap photos or Record clips into the data folder, under a label.

    task: which task's media to record ("image" / "hand_pose": photos, "hand_action": clips).
    picker: the DataSourcePicker whose data folder receives them (TrainerApp passes its own); without
        one, a picker over `root` (default: $CREATEML_WIDGETS_DATA_ROOT, else the bundled samples) is made.
    Files go to `<root>/uploads/<label>/` named `<label>-<time>.jpg` / `.mp4`, as uploads are saved.
    `saved` lists the paths saved so far; `counts` the files per label in the uploads folder.
    """

    label = traitlets.Unicode("").tag(sync=True)
    clip_seconds = traitlets.Float(3.0).tag(sync=True)
    clip_fps = traitlets.Float(30.0, help="frames a second recorded (and written) in a clip").tag(sync=True)
    photo_max_side = traitlets.Int(640).tag(sync=True)
    media = traitlets.Unicode("image").tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    message_level = traitlets.Unicode("info").tag(sync=True)
    saved = traitlets.List()

    def __init__(self, task: str | type | ClassifierTask | TaskInfo = "image", picker: DataSourcePicker | None = None,
                 root: str | os.PathLike | None = None, label: str = "", clip_seconds: float = 3.0, **kwargs: object):
        from .data_source_picker import DataSourcePicker

        info = task_info(task)
        self.task = info
        self.picker = picker if picker is not None else DataSourcePicker(info.key, root=root, thumbnails_per_class=0)
        super().__init__(_kind="camera", media=info.media, label=label, clip_seconds=float(clip_seconds), **kwargs)
        self.picker.observe(self._sync_counts, ["counts", "path"])
        self._sync_counts()
        self.on_msg(self._on_message)

    @property
    def root(self) -> Path:
        """The data folder (the picker's): recordings go to its uploads folder."""
        return self.picker.root

    def _sync_counts(self, _change=None) -> None:
        uploads = self.picker.uploads_folder
        here = self.picker.path
        self.counts = dict(self.picker.counts) if here == uploads else {}

    def _say(self, text: str, level: str = "info") -> None:
        self.message_level = level
        self.message = text

    # -- saving ---------------------------------------------------------------------------------
    def save_photo(self, data: bytes, label: str | None = None) -> Path:
        """Save JPEG bytes as a photo of `label` (default: the label typed in the widget)."""
        decode_jpeg(data)  # refuse what is not a photo before anything is written
        return self._save(data, label, "jpg")

    def save_clip(self, frames: list[bytes], times: list[float], label: str | None = None) -> Path:
        """Save a recorded clip — JPEG frames and their capture times (s) — as an MP4 under `label`.

        The frames are resampled by time to `clip_fps` (the nearest frame to each point of the grid, as
        videos are read for training: `live.TimestampResampler`), so a clip's length is the time it took.
        """
        import tempfile

        from ..features.video import write_video
        from ..live import TimestampResampler

        if len(frames) != len(times) or len(frames) < 2:
            raise ValueError(f"a clip needs at least two frames with their times; got {len(frames)} frames "
                             f"and {len(times)} times")
        decoded = [decode_jpeg(f) for f in frames]  # refuse what is not a clip before anything is written
        order = sorted(range(len(times)), key=lambda i: times[i])
        resampler = TimestampResampler(self.clip_fps)
        grid, last = [], None
        for i in order:
            if last is not None and times[i] <= last:
                continue  # two frames with one time: the first is kept
            grid += [frame for _t, frame in resampler.push(times[i], decoded[i])]
            last = times[i]
        with tempfile.TemporaryDirectory(prefix="cmlw-clip-") as tmp:
            mp4 = write_video(Path(tmp) / "clip.mp4", grid, fps=self.clip_fps)
            return self._save(mp4.read_bytes(), label, "mp4")

    def _save(self, data: bytes, label: str | None, suffix: str) -> Path:
        label = (self.label if label is None else label).strip()
        if not label:
            raise ValueError("type a label first: the photos and clips of one label are saved in its folder")
        if not data:
            raise ValueError("the browser sent an empty recording")
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
        name = sanitize_filename(f"{label}-{stamp}.{suffix}", fallback=f"camera.{suffix}")
        [path] = self.picker.save_uploads([{"name": name, "content": bytes(data)}], label)
        self.saved = [*self.saved, path]
        self._sync_counts()
        return path

    def _on_message(self, _widget, content, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind not in ("photo", "clip"):
            return
        try:
            data = bytes(buffers[0]) if buffers else b""
            label = str(content.get("label", self.label))
            if kind == "photo":
                path = self.save_photo(data, label)
            else:
                times = [float(t) for t in content.get("times", [])]
                path = self.save_clip([bytes(b) for b in buffers], times, label)
                data = path.read_bytes()
            rel = relative_to_root(path, self.root)
            self._say(f"saved {rel} ({len(data) / 1000:.0f} kB)", "ok")
        except Exception as err:  # noqa: BLE001 - shown in the widget, the app goes on
            log.info("camera: not saved: %s", err)
            self._say(f"not saved: {err}", "failed")


class LivePreview(_CameraView):
    """`model` answering live on the camera stream (label, confidence, skeleton, hand-action window).

    model: a trained MLImageClassifier, MLHandPoseClassifier or MLHandActionClassifier (None until
        there is one: the stream then says so). max_fps / frame_max_side: how often and how large the
        browser sends frames. `fps` and `latency_ms` (median, captured → drawn) are reported by the
        browser; `last_result` is the last LiveResult.
    """

    model = traitlets.Any(None, allow_none=True)
    max_fps = traitlets.Float(15.0).tag(sync=True)
    frame_max_side = traitlets.Int(480).tag(sync=True)
    autostart = traitlets.Bool(False).tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    fps = traitlets.Float(0.0).tag(sync=True)
    latency_ms = traitlets.Float(0.0).tag(sync=True)
    _edges = traitlets.List().tag(sync=True)
    frames = traitlets.Int(0, help="frames answered in this kernel")
    last_result = traitlets.Any(None, allow_none=True)

    def __init__(self, model: ClassifierTask | None = None, **kwargs: object):
        from ..nets.gcn import HAND_EDGES

        super().__init__(_kind="live", _edges=[list(e) for e in HAND_EDGES], **kwargs)
        self._predictor = None
        self.model = model
        self.on_msg(self._on_message)

    @traitlets.observe("model")
    def _on_model(self, change) -> None:
        self.release()

    def release(self) -> None:
        """Close the live predictor (its MediaPipe graphs); the next frame makes a new one."""
        old, self._predictor = self._predictor, None
        if old is not None:
            old.close()

    def predictor(self) -> LivePredictor | None:
        """The LivePredictor of `model` (made on first use); None without a model."""
        if self._predictor is None and self.model is not None:
            from ..live import LivePredictor

            self._predictor = LivePredictor(self.model, mirrored=False)
        return self._predictor

    def answer(self, data: bytes, timestamp: float | None = None) -> dict:
        """The answer the browser is sent for one JPEG frame (what the message handler replies)."""
        predictor = self.predictor()
        if predictor is None:
            return {"error": "train a model first: the live preview answers with the trained model"}
        rgb = decode_jpeg(data)
        result = predictor.predict_frame(rgb, timestamp)
        self.last_result = result
        self.frames += 1
        return result.to_dict(top=5)

    def _on_message(self, _widget, content, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "start":
            if self._predictor is not None:
                self._predictor.reset()
            return
        if kind != "frame":
            return
        reply = {"type": "result", "id": content.get("id")}
        try:
            t = content.get("t")
            reply.update(self.answer(bytes(buffers[0]) if buffers else b"", float(t) if t is not None else None))
        except Exception as err:  # noqa: BLE001 - answered in the stream, the app goes on
            log.info("live preview: %s", err)
            reply["error"] = f"{type(err).__name__}: {err}"
            if isinstance(err, ValueError) and "timestamps must increase" in str(err) and self._predictor:
                self._predictor.reset()
        self.send(reply)


def camera_help_html() -> str:
    """One line saying where the camera's files go (for the app's data section)."""
    return html.escape("Press Start camera, type a label, then Snap photos (or Record clips for hand actions): "
                       "they are saved in uploads/<label>/ inside the data folder, ready to train on.")
