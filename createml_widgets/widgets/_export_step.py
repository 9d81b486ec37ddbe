"""The app's Export step: the format and weight precision menus, writing the model and offering it as a download.

`ExportStep` is mixed into TrainerApp; it uses the app's `model`, `export_path` and `info`.
"""
from __future__ import annotations

import html
import os
import tempfile
import threading
from pathlib import Path

import ipywidgets as widgets

from ._leave_guard import return_freed_memory
from ._look import MARKER_COLORS
from ._paths import sanitize_filename
from .download import FileDownload

# Export step: file suffix -> (menu label, what the file is for)
EXPORT_FORMATS = {
    ".mlmodel": ("Core ML (.mlmodel)",
                 "Core ML model for iPhone, iPad and Mac apps: drop it into Xcode; the same inputs, outputs and "
                 "metadata as a Create ML model (iOS 13 / macOS 10.15 and later)."),
    ".onnx": ("ONNX (.onnx)",
              "ONNX model for Android, web and Windows apps: run it with ONNX Runtime; the same input names and "
              "shapes, a label and a probabilities output, class labels in its metadata."),
}
EXPORT_PRECISIONS = {"float16": "16-bit floats", "int8": "8-bit (smallest)", "float32": "32-bit floats"}
EXPORT_PRECISION_HELP = {
    "float32": "32-bit floats, the training precision (largest file).",
    "float16": "16-bit floats: half the size; same answers as 32-bit on the sample data.",
    "int8": "8-bit quantised: a quarter of the size; answers can differ slightly from 32-bit.",
}
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024


class ExportStep:
    """The Export step of TrainerApp (a mixin: the app holds the widgets and the trained model)."""

    def _build_export(self, info) -> list[widgets.Widget]:
        """Make the step's widgets for the task `info`; returns what its section shows."""
        self.export_name = widgets.Text(value=f"{info.class_name.removeprefix('ML')}.mlmodel",
                                        description="File name", layout=widgets.Layout(width="340px"))
        self.export_name.add_class("cmlw-export-name")
        self.export_button = widgets.Button(description="Export Core ML model", icon="download", disabled=True,
                                            layout=widgets.Layout(width="auto"))  # the default width cuts the label
        self.export_button.add_class("cmlw-export-button")
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.export_format = widgets.Dropdown(options=[(label, suffix) for suffix, (label, _) in EXPORT_FORMATS.items()],
                                              value=".mlmodel", description="Format",
                                              layout=widgets.Layout(width="340px"))
        self.export_format.add_class("cmlw-export-format")
        self.export_precision = widgets.Dropdown(options=[(label, key) for key, label in EXPORT_PRECISIONS.items()],
                                                 value=info.load().default_precision, description="Weights",
                                                 layout=widgets.Layout(width="340px"))
        self.export_precision.add_class("cmlw-export-precision")
        self.export_help = widgets.HTML()
        self.export_help.add_class("cmlw-export-help")
        self.export_format.observe(lambda _c: self._export_format_changed(), "value")
        self.export_precision.observe(lambda _c: self._export_format_changed(), "value")
        self._export_format_changed()
        self.download = FileDownload()  # the file reaches the browser on click, never the widget state
        return [widgets.HBox([self.export_format, self.export_precision], layout=widgets.Layout(flex_flow="row wrap")),
                self.export_help,
                widgets.HBox([self.export_name, self.export_button], layout=widgets.Layout(flex_flow="row wrap")),
                self.download]

    def _export_format_changed(self) -> None:
        suffix = self.export_format.value
        self.export_precision.disabled = suffix != ".mlmodel"
        name = self.export_name.value.strip()
        stem = name.rsplit(".", 1)[0] if name.lower().endswith(tuple(EXPORT_FORMATS)) else name
        if stem:
            self.export_name.value = f"{stem}{suffix}"
        what = EXPORT_FORMATS[suffix][1]
        if suffix == ".mlmodel":
            what += f" Weights: {EXPORT_PRECISION_HELP[self.export_precision.value]}"
        self.export_help.value = f"<div class='cmlw-export-what' style='color:#6e6e73'>{html.escape(what)}</div>"

    def export(self, directory: str | os.PathLike | None = None) -> Path:
        """Write the model in the chosen format (`model.write`; Core ML .mlmodel with the chosen weight
        precision, or ONNX) and offer it as a download (`FileDownload`: the bytes go to the browser on click,
        so a saved notebook does not carry the model); returns the file."""
        if self.model is None:
            raise RuntimeError("train a model before exporting it")
        suffix = self.export_format.value
        name = sanitize_filename(self.export_name.value.strip() or f"Classifier{suffix}")
        if not name.lower().endswith(suffix):
            name = f"{name.rsplit('.', 1)[0] if '.' in name else name}{suffix}"
        folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="cmlw-export-"))
        precision = self.export_precision.value if suffix == ".mlmodel" else None
        path = self.model.write(folder / name, precision=precision)
        return_freed_memory()  # the conversion's working memory
        self.export_path = Path(path)
        size = self.export_path.stat().st_size
        if size > MAX_DOWNLOAD_BYTES:
            self.download.clear(f"<span>Written to <code>{html.escape(str(path))}</code> "
                                f"({size / 1e6:.1f} MB, too large to offer as a download here)</span>")
            return self.export_path
        self.download.offer(self.export_path, name)
        return self.export_path

    def _export_clicked(self) -> None:
        self.export_button.disabled = True
        what = "ONNX" if self.export_format.value == ".onnx" else "Core ML"
        self.download.clear(f"<span class='cmlw-exporting'>Writing the {what} model…</span>")

        def run():
            try:
                self.export()
            except Exception as err:  # noqa: BLE001 - shown in the app
                self.download.clear(f"<span class='cmlw-error' style='color:{MARKER_COLORS['error']}'>Export failed: "
                                    f"{html.escape(f'{type(err).__name__}: {err}')}</span>")
            finally:
                self.export_button.disabled = self.model is None

        threading.Thread(target=run, name="cmlw-export", daemon=True).start()
