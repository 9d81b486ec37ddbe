"""FileDownload: a download link for a file the kernel wrote, without the file in the widget's state.

A data: link holds the whole file base64-encoded in the widget's state, and so in every saved notebook
(a Core ML image classifier: 9.9 MB of notebook). Here the state holds only the name, size and SHA-256;
the click sends a custom message, the kernel answers with the bytes as one binary buffer and the
browser saves them through a Blob URL (download.js). That is the widget channel itself, so it works
wherever the widgets do — JupyterLab, Notebook, Voilà, Binder — with no files handler or URL to guess.

`value` is a message shown instead of the link (writing…, failed, too large): HTML, escaped by the caller.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import anywidget
import traitlets

log = logging.getLogger(__name__)
ESM = Path(__file__).with_name("download.js")


class FileDownload(anywidget.AnyWidget):
    """A link that downloads `path` (set with `offer(path, name)`, cleared with `clear()`)."""

    _esm = ESM
    value = traitlets.Unicode("", help="HTML message shown when no file is offered").tag(sync=True)
    filename = traitlets.Unicode("").tag(sync=True)
    size = traitlets.Int(0).tag(sync=True)
    sha256 = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)
        self.path: Path | None = None
        self.on_msg(self._on_message)

    def offer(self, path: str | os.PathLike, name: str | None = None) -> None:
        """Offer the file at `path` as `name` (its own name by default)."""
        path = Path(path)
        data = path.read_bytes()
        self.path = path
        self.value = ""
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.filename = name or path.name

    def clear(self, message: str = "") -> None:
        """Offer nothing; show `message` (HTML) instead."""
        self.path = None
        self.filename = ""
        self.size = 0
        self.sha256 = ""
        self.value = message

    def payload(self) -> tuple[dict, list[bytes]]:
        """What a click is answered with: a message and the file's bytes as its one buffer."""
        if self.path is None:
            return {"type": "file", "error": "nothing to download: export the model first"}, []
        try:
            data = self.path.read_bytes()
        except OSError as err:
            return {"type": "file", "error": f"cannot read {self.path}: {err.strerror or err}; export it again"}, []
        if hashlib.sha256(data).hexdigest() != self.sha256:
            return {"type": "file", "error": f"{self.path.name} changed on disk since it was exported; "
                                             "export it again"}, []
        return {"type": "file", "name": self.filename, "size": len(data)}, [data]

    def _on_message(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "download":
            return
        reply, buffers = self.payload()
        if "error" in reply:
            log.info("download: %s", reply["error"])
        self.send(reply, buffers)
