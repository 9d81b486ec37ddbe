"""FileDownload: the file reaches the browser through a custom message on click, never through the
widget's state (which a saved notebook keeps), and what comes back is the file's exact bytes."""
from __future__ import annotations

import hashlib
import json
import os

from widget_helpers import click

from createml_widgets.widgets.download import FileDownload


def test_the_bytes_go_out_on_click_and_stay_out_of_the_state(tmp_path):
    data = os.urandom(3_000_000)
    path = tmp_path / "Model.mlmodel"
    path.write_bytes(data)
    widget = FileDownload()
    widget.offer(path, "My Model.mlmodel")
    state = widget.get_state()
    assert state["filename"] == "My Model.mlmodel" and state["size"] == len(data)
    assert state["sha256"] == hashlib.sha256(data).hexdigest()
    rest = {k: v for k, v in state.items() if k not in ("_esm", "_css")}  # the module's source, a few kB
    assert len(json.dumps(rest, default=str)) < 1_000  # the 3 MB file is not in it, in any encoding

    reply, buffers = click(widget)
    assert reply == {"type": "file", "name": "My Model.mlmodel", "size": len(data)}
    assert buffers == [data]


def test_a_changed_or_missing_file_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "Model.mlmodel"
    path.write_bytes(b"first")
    widget = FileDownload()
    widget.offer(path)
    path.write_bytes(b"second")
    reply, buffers = click(widget)
    assert "changed on disk" in reply["error"] and "export it again" in reply["error"] and buffers == []
    path.unlink()
    reply, _ = click(widget)
    assert "cannot read" in reply["error"] and str(path) in reply["error"]
    widget.clear("<span>Writing…</span>")
    assert widget.filename == "" and widget.value == "<span>Writing…</span>"
    reply, _ = click(widget)
    assert "export the model first" in reply["error"]
