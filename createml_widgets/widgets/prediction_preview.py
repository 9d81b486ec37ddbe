"""PredictionPreview: try a trained model on one image or video — a file under the data root or an upload.

Images show the labels with confidence bars (and, for the hand pose classifier, the detected hand's
skeleton drawn on the photo); videos show one prediction per window along a timeline, with a frame
of each window and its skeleton.
"""
from __future__ import annotations

import html
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import traitlets

from ..display import image_to_data_uri
from ..errors import NoHandDetectedError
from ._look import message_html, style_while_enabled
from ._media import bars_html, load_picture, with_hand
from ._paths import (
    PathOutsideRootError,
    default_data_root,
    is_within,
    relative_to_root,
    resolve_under_root,
    sanitize_filename,
)
from ._tasks import is_media_file, task_info

if TYPE_CHECKING:
    from ..features.image_io import ImageSource
    from ..tasks._base import ClassifierTask
    from ..tasks.hand_action_classifier import Prediction
    from ._tasks import TaskInfo

log = logging.getLogger(__name__)
MAX_LISTED_FILES = 3000
MAX_TIMELINE_FRAMES = 6
PREVIEW_SIDE = 320  # px, the photo's longer side in the preview
PALETTE = ["#0071e3", "#ff9500", "#34c759", "#af52de", "#ff3b30", "#5ac8fa", "#ffcc00", "#a2845e", "#ff2d55",
           "#5856d6"]


class PredictionPreview(widgets.VBox):
    """Pick an image or video (a path under `root`, or an upload) and see what `model` predicts.

    `results` holds the last prediction: [(label, confidence), …] for images, [Prediction] for videos.
    """

    model = traitlets.Any(None, allow_none=True)
    results = traitlets.Any(None, allow_none=True)
    busy = traitlets.Bool(False)
    error = traitlets.Unicode("")

    def __init__(self, model: ClassifierTask | None = None, root: str | os.PathLike | None = None,
                 task: str | type | TaskInfo | None = None, **kwargs: object):
        self.root = (Path(root).expanduser().resolve() if root is not None else default_data_root())
        self._task = task_info(task if task is not None else (model if model is not None else "image"))
        self._thread: threading.Thread | None = None
        self.data_folder = ""  # the data source's folder under root: the default file is taken from it first
        self._default_file = None  # the file the box was given by default (replaced when it is reset)
        self._showing_uploaded = False  # while the upload button is given the uploaded file's entry (no bytes)
        self.path_input = widgets.Combobox(placeholder="a file inside the data folder, e.g. "
                                           "sign-language-digits/3/IMG_1121.JPG", ensure_option=False,
                                           description="File", layout=widgets.Layout(width="520px"))
        self.path_input.add_class("cmlw-preview-path")
        self.predict_button = widgets.Button(description="Predict", icon="magic", button_style="primary")
        self.predict_button.add_class("cmlw-preview-button")
        style_while_enabled(self.predict_button, "primary")
        self.predict_button.on_click(lambda _b: self.predict_in_background(self.path_input.value.strip()))
        self.upload = widgets.FileUpload(multiple=False, description="Upload", accept=self._accept())
        self.upload.add_class("cmlw-preview-upload")
        self.upload.observe(self._on_upload, "value")
        self.message = widgets.HTML()
        self.message.add_class("cmlw-preview-message")
        # A flex item shrinks by default: next to the wide confidence bars the photo (up to 320 px) was
        # squeezed to ~100 px. The photo keeps its size; the results take what is left.
        self.picture = widgets.HTML(layout=widgets.Layout(flex="0 0 auto"))
        self.picture.add_class("cmlw-preview-image")
        self.results_html = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.results_html.add_class("cmlw-preview-results")
        self.timeline = widgets.HTML()
        self.timeline.add_class("cmlw-preview-timeline")
        super().__init__(children=[
            widgets.HBox([self.path_input, self.predict_button, self.upload]),
            self.message,
            widgets.HBox([self.picture, self.results_html], layout=widgets.Layout(align_items="flex-start")),
            self.timeline,
        ], **kwargs)
        self.add_class("cmlw-prediction-preview")
        self.model = model  # -> _on_model
        if model is None:
            self._on_model({"new": None})

    # -- setup ---------------------------------------------------------------------------------
    @property
    def task(self) -> TaskInfo:
        """The task previewed (from `task`, else the model's)."""
        return self._task

    def _accept(self) -> str:
        return "video/*,.mp4,.mov,.m4v,.avi,.webm,.mkv" if self._task.media == "video" else "image/*"

    @traitlets.observe("model")
    def _on_model(self, change) -> None:
        model = change["new"]
        if model is not None:
            self._task = task_info(model)
            self.upload.accept = self._accept()
        self.predict_button.disabled = model is None
        self._say("Train a model first; then pick a file to see its prediction." if model is None else "")
        self.refresh_files(reset=True)  # the default file: one this model did not learn from
        self.results = None
        self.picture.value = self.results_html.value = self.timeline.value = ""

    def show_data_folder(self, folder: str) -> None:
        """The data source changed to `folder` (relative to root): list the files again and choose the
        default file again, from that folder first and never one the model trained on."""
        self.data_folder = folder or ""
        self.refresh_files(reset=True)

    def refresh_files(self, reset: bool = False) -> None:
        """List the media files under root as suggestions for the file box. With `reset` (a new model,
        other training data) the box's default file is chosen again — unless the user typed their own."""
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if is_media_file(p, self._task.media) and is_within(p, self.root):
                    found.append(p.relative_to(self.root).as_posix())
                    if len(found) >= MAX_LISTED_FILES:
                        break
            if len(found) >= MAX_LISTED_FILES:
                break
        self.path_input.options = found
        current = self.path_input.value
        if not current or (reset and current == self._default_file):
            self._choose_default(found)

    def trained_on(self) -> set[Path]:
        """The files the model learned from (its training examples' paths), resolved."""
        metrics = getattr(self.model, "training_metrics", None)
        paths = metrics.examples["Path"] if metrics is not None and metrics.is_valid else []
        return {Path(p).resolve() for p in paths if p}

    def _choose_default(self, found: list[str]) -> None:
        """The box's default: a file of the data folder the model did not train on (a validation example
        first); none when it trained on all of them, with a hint — a training photo scores near 100%."""
        trained = self.trained_on() if self.model is not None else set()
        held_out = set()
        validation = getattr(self.model, "validation_metrics", None)
        if validation is not None and validation.is_valid:
            held_out = {Path(p).resolve() for p in validation.examples["Path"] if p}
        # a copy of a training file (same name and size) would score the same as the file itself
        twins: dict[str, set[int]] = {}
        for p in trained:
            twins.setdefault(p.name, set()).add(_size(p))
        metrics = getattr(self.model, "training_metrics", None)
        # a skipped file (unreadable, or no hand found in it) has no prediction to show either
        skipped = {Path(x["path"]).resolve() for x in getattr(metrics, "skipped", []) if x.get("path")}
        unusable = trained | skipped
        fresh = [f for f in found if (self.root / f).resolve() not in unusable
                 and (Path(f).name not in twins or _size(self.root / f) not in twins[Path(f).name])]
        folder = self.data_folder.strip("/")
        near = [f for f in fresh if not folder or f.startswith(folder + "/")]  # in the data picked, first
        pick = next((f for f in near + fresh if (self.root / f).resolve() in held_out),
                    near[0] if near else fresh[0] if fresh else "")
        self._default_file = pick
        self.path_input.value = pick
        if self.model is not None and found and not pick:
            self._say(f"Every {self._task.media} in the data folder was used to train this model, so it would "
                      f"score them near 100%: upload a new {self._task.media} (or take one with the camera) to "
                      "see how it does on something it has not seen.")

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path typed by a user, confined to root (absolute paths only if they lie inside it)."""
        p = Path(os.fspath(path))
        if p.is_absolute():
            if not is_within(p, self.root):
                raise PathOutsideRootError(str(path), self.root)
            p = p.resolve()
        else:
            p = resolve_under_root(self.root, os.fspath(path))
        if not p.is_file():
            raise FileNotFoundError(f"{path!r} is not a file inside the data folder")
        return p

    def _box_text(self, path) -> str:
        """How the file box names `path`: relative to root when it lies inside it, else as given."""
        text = os.fspath(path)
        p = Path(text)
        if not p.is_absolute():
            return text
        if p.is_relative_to(self.root):  # named through root (a link inside stays the link's name)
            return p.relative_to(self.root).as_posix()
        if is_within(p, self.root):  # another spelling of a path inside root (e.g. through a linked folder)
            return relative_to_root(p, self.root)
        return text

    # -- predicting ----------------------------------------------------------------------------
    def predict(self, source: ImageSource) -> list[tuple[str, float]] | list[Prediction]:
        """Predict `source` now and show it: a path (under root), a PIL image, or an array.

        Returns the prediction (also in `results`); errors are shown and re-raised.
        """
        if self.model is None:
            raise RuntimeError("there is no model to predict with yet")
        self.busy = True
        self.error = ""
        self.results = None  # never leave the previous file's prediction next to a failed one
        self._say("Predicting…")
        try:
            if isinstance(source, (str, os.PathLike)):
                self.path_input.value = self._box_text(source)  # the box names the file predicted
                source = self.resolve(source)
            if self._task.media == "video":
                results = self._predict_video(source)
            elif self._task.key == "hand_pose":
                results = self._predict_hand_pose(source)
            else:
                results = self._predict_image(source)
            self.results = results
            self._say("")
            return results
        except NoHandDetectedError as err:
            self.error = str(err)
            self._say(f"No hand found: {err}", "warning")
            self.results_html.value = self.timeline.value = ""
            raise
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            self._say(self.error, "error")
            self.picture.value = self.results_html.value = self.timeline.value = ""
            raise
        finally:
            self.busy = False

    def predict_in_background(self, source: ImageSource | None) -> threading.Thread | None:
        """What the Predict button does: predict on a thread so the notebook stays responsive."""
        if self.busy or not source:
            if not source:
                self._say("Choose a file first.", "warning")
            return None

        def run():
            try:
                self.predict(source)
            except Exception:  # noqa: BLE001 - already shown in the widget
                log.debug("prediction failed", exc_info=True)

        self._thread = threading.Thread(target=run, name="cmlw-preview", daemon=True)
        self._thread.start()
        return self._thread

    def _show_picture(self, image, caption: str = "") -> None:
        # Shown PREVIEW_SIDE px on its longer side, small photos (the 100 px samples) scaled up, and
        # the size is given to the <img> so that no flex box can squeeze it.
        uri = image_to_data_uri(image, max_side=PREVIEW_SIDE)
        scale = PREVIEW_SIDE / max(1, *image.size)
        width, height = max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))
        cap = (f"<div class='cmlw-preview-caption' style='color:#6e6e73;font-size:12px;max-width:{width}px;"
               "overflow-wrap:anywhere'>"
               f"{html.escape(caption)}</div>" if caption else "")
        self.picture.value = (f"<div style='margin-right:16px;min-width:{width}px'><img src='{uri}' "
                              f"width='{width}' height='{height}' style='width:{width}px;height:{height}px;"
                              f"max-width:none;flex:0 0 auto;border-radius:6px;border:1px solid #ddd'/>{cap}</div>")

    def _predict_image(self, source):
        image = load_picture(source, max_side=1024)
        ranked = self.model.ranked_prediction(source if not isinstance(source, Path) else str(source))
        self._show_picture(image, _name(source))
        self.results_html.value = self._results_block(ranked)
        self.timeline.value = ""
        return ranked

    def _predict_hand_pose(self, source):
        image = load_picture(source, max_side=1024)
        if isinstance(source, Path) and not getattr(image, "filename", ""):
            image.filename = str(source)  # "no hand was detected in <file>", not "in <PIL image>"
        model = self.model
        if hasattr(model, "keypoints") and hasattr(model, "prediction_from_keypoints"):
            try:
                observation = model.keypoints(image)
            except NoHandDetectedError:
                self._show_picture(image, " · ".join(x for x in (_name(source), "no hand found") if x))
                raise
            views = observation.all_views() if hasattr(observation, "all_views") else observation.keypoints
            ranked = model.prediction_from_keypoints(views)  # = model.prediction(image)
            from ..features.hand_keypoints import draw_hand

            drawn = draw_hand(image, observation.keypoints)
            chirality = getattr(observation, "chirality", "")
        else:
            ranked = model.prediction(image)
            drawn, observation = with_hand(image)
            chirality = getattr(observation, "chirality", "") if observation is not None else ""
        self._show_picture(drawn, f"{_name(source)}" + (f" · {chirality} hand" if chirality else ""))
        self.results_html.value = self._results_block(ranked)
        self.timeline.value = ""
        return ranked

    def _predict_video(self, source):
        if not isinstance(source, Path):
            raise TypeError("the hand action preview takes a video file")
        predictions = self.model.prediction(str(source))
        rate = float(getattr(self.model.model_parameters, "target_frame_rate", 30.0))
        self.timeline.value = self._timeline_html(predictions, rate, source)
        ranked = self.model.clip_prediction(predictions)
        self.picture.value = ""
        self.results_html.value = self._results_block(ranked, title=f"Whole video ({len(predictions)} window{'s' if len(predictions) != 1 else ''})")
        return predictions

    def _results_block(self, ranked, title: str = "Prediction") -> str:
        top = ranked[0] if ranked else ("–", 0.0)
        return (f"<div><div style='font-size:13px;color:#6e6e73'>{html.escape(title)}</div>"
                f"<div class='cmlw-preview-top' style='font-size:22px;font-weight:700;margin:2px 0 8px 0'>"
                f"{html.escape(str(top[0]))} <span style='font-size:15px;color:#6e6e73'>{top[1]:.1%}</span></div>"
                f"{bars_html(ranked)}</div>")

    def _timeline_html(self, predictions, rate: float, path: Path) -> str:
        labels = sorted({lab for p in predictions for lab, _ in p.results})
        colors = {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
        total = max((p.frame_range.stop for p in predictions), default=1) or 1
        segments, rows = [], []
        for i, p in enumerate(predictions):
            label, conf = p.results[0]
            start, stop = p.frame_range.start, p.frame_range.stop
            width = 100.0 * (stop - start) / total
            segments.append(
                f"<div class='cmlw-timeline-window' title='frames {start}–{stop - 1}: {html.escape(label)} {conf:.0%}'"
                f" style='flex:0 0 {width:.2f}%;background:{colors[label]};opacity:{0.35 + 0.65 * conf:.2f};"
                f"color:#fff;font-size:11px;padding:3px 4px;box-sizing:border-box;overflow:hidden;white-space:nowrap;"
                f"border-right:1px solid #fff'>{html.escape(label)} {conf:.0%}</div>")
            frame_html = self._window_frame(path, (start + stop) / 2 / rate) if i < MAX_TIMELINE_FRAMES else ""
            rows.append(f"<tr><td>{start}–{stop - 1}</td><td>{start / rate:.2f}–{stop / rate:.2f} s</td>"
                        f"<td><b>{html.escape(label)}</b></td><td>{conf:.1%}</td><td>{frame_html}</td></tr>")
        return ("<div><b>Timeline</b> <span style='color:#6e6e73'>(one prediction per window of frames)</span>"
                f"<div class='cmlw-timeline' style='display:flex;width:640px;border-radius:4px;overflow:hidden;"
                f"margin:4px 0'>{''.join(segments)}</div>"
                "<table class='cmlw-timeline-table' style='border-collapse:collapse;font-size:12px'>"
                "<tr><th>frames</th><th>time</th><th>label</th><th>confidence</th><th>frame</th></tr>"
                + "".join(rows) + "</table></div>")

    def _window_frame(self, path: Path, seconds: float) -> str:
        try:
            from PIL import Image

            from ..features.video import iter_frames

            frame = next(iter_frames(str(path), target_frame_rate=30.0, start=max(0.0, seconds), max_side=320),
                         None)
            if frame is None:
                return ""
            drawn, _ = with_hand(Image.fromarray(frame[1]))
            return f"<img src='{image_to_data_uri(drawn, 96)}' style='border-radius:3px'/>"
        except Exception as err:  # noqa: BLE001 - the frame is a nicety
            log.debug("no frame for %s at %.2fs: %s", path, seconds, err)
            return ""

    # -- uploads -------------------------------------------------------------------------------
    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files or self._showing_uploaded:
            return
        f = files[0]
        name = sanitize_filename(f.get("name", "upload"))
        content = bytes(f.get("content", b""))
        # The button keeps the file's name and size, not its bytes: its label reads "Upload (1)", not "(0)".
        self._showing_uploaded = True
        try:
            self.upload.value = ({"name": name, "type": f.get("type", ""), "size": len(content),
                                  "content": memoryview(b""), "last_modified": f.get("last_modified")},)
        finally:
            self._showing_uploaded = False
        if self.model is None:
            self._say("Train a model first.", "warning")
            return

        def run():
            try:
                if self._task.media == "video":
                    suffix = Path(name).suffix if Path(name).suffix else ".mp4"
                    with tempfile.TemporaryDirectory(prefix="cmlw-preview-") as tmp:
                        p = Path(tmp) / f"upload{suffix}"
                        p.write_bytes(content)
                        self._predict_uploaded(p, name)
                else:
                    from ..features.image_io import load_image_bytes

                    # Decoded with the same guards as training (pixel limit, reduced decoding of big
                    # photos); a file that is no image is shown as an error, never silently dropped.
                    try:
                        image = load_image_bytes(content, name)
                    except Exception as err:  # noqa: BLE001 - shown in the widget
                        self._show_failure(str(err))
                        return
                    self._predict_uploaded(image, name)
            except Exception:  # noqa: BLE001 - shown by _predict_uploaded()
                log.debug("upload prediction failed", exc_info=True)

        self._thread = threading.Thread(target=run, name="cmlw-preview-upload", daemon=True)
        self._thread.start()

    def _predict_uploaded(self, source, name: str | None = None) -> None:
        # Uploaded files live outside root (a temporary folder); they are predicted directly. Messages
        # name the file the student uploaded (`name`), not "<PIL image>" or the temporary copy.
        def named(err) -> str:
            text = str(err)
            if name:
                text = text.replace(str(source), name).replace("<PIL image>", name)
                if name not in text:
                    text = f"{name}: {text}"
            return text

        if self.model is None:
            return
        self.busy = True
        self.error = ""
        self.results = None
        try:
            if isinstance(source, Path):
                self.results = self._predict_video(source)
            elif self._task.key == "hand_pose":
                self.results = self._predict_hand_pose(source)
            else:
                self.results = self._predict_image(source)
            self._say("")
        except NoHandDetectedError as err:
            self.error = named(err)
            self._say(f"No hand found: {self.error}", "warning")
            self.results_html.value = self.timeline.value = ""
        except Exception as err:  # noqa: BLE001
            self.error = f"{type(err).__name__}: {named(err)}"
            self._say(self.error, "error")
            self.picture.value = self.results_html.value = self.timeline.value = ""
        finally:
            self.busy = False

    def _show_failure(self, message: str) -> None:
        """An upload that could not be read: say so, and take the previous result off the screen."""
        self.results = None
        self.error = message
        self._say(message, "error")
        self.picture.value = self.results_html.value = self.timeline.value = ""

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background prediction (button or upload) to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _say(self, text: str, level: str = "info") -> None:
        self.message.value = message_html("cmlw-preview", text, level, self.root)


def _name(source) -> str:
    if isinstance(source, Path):
        return source.name
    return ""


def _size(path: Path) -> int:
    """The file's size in bytes (-1 when it cannot be read)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
