"""`make dashboard` as a server a hostile page or a careless crowd meets (issue 11 point 13).

The server is the real one, started with the Makefile's own command (as tests/browser does); it serves
a one-widget notebook in place of the dashboard so that each kernel is light.
"""
from __future__ import annotations

import base64
import importlib.util
import os
import shlex
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dashboard_helpers", REPO / "tests" / "browser" / "test_dashboard.py")
dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard)


def _request(port: int, path: str, host: str, headers: dict | None = None) -> tuple[int, str]:
    """One raw HTTP/1.1 GET to 127.0.0.1:port with the given Host header (what a rebinding page sends)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
            if path.endswith("/channels") and b"\r\n\r\n" in b"".join(chunks):
                break  # a websocket answer: the headers are all we need
    text = b"".join(chunks).decode("utf-8", "replace")
    return int(text.split(" ", 2)[1]), text


def _websocket_headers(origin: str) -> dict:
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Origin": origin}


@pytest.fixture()
def widget_notebook(tmp_path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import ipywidgets as w\nw.Button(description='ok')")])
    path = tmp_path / "widget.ipynb"
    nbformat.write(nb, path)
    return path


def _command(port: int, notebook: Path, *make_vars: str) -> str:
    words = shlex.split(dashboard.dashboard_command(port, *make_vars))
    words[words.index(dashboard.DASHBOARD)] = str(notebook)
    return shlex.join(words) if not words[0].startswith("PYTHONPATH=") else words[0] + " " + shlex.join(words[1:])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dns_rebinding_host_gets_neither_the_page_nor_the_websocket(widget_notebook, tmp_path):
    port = dashboard._free_port()
    with dashboard.serve(_command(port, widget_notebook), port, tmp_path / "cache", tmp_path / "voila.log") as server:
        status, page = _request(port, "/", f"localhost:{port}")
        assert status == 200 and "kernelId" in page or "kernel_id" in page
        kernel = page.split("kernelId", 1)[1].split('"')[2] if "kernelId" in page else None
        assert kernel and len(kernel) == 36, page[:2000]
        # Before: 200 and the websocket accepted (Voilà sets allow_remote_access=True).
        status, _ = _request(port, "/", f"rebind.evil.example:{port}")
        assert status == 403
        status, _ = _request(port, "/voila/files/widget.ipynb", f"rebind.evil.example:{port}")
        assert status in (403, 404)
        if kernel:
            path = f"/api/kernels/{kernel}/channels"
            status, _ = _request(port, path, f"rebind.evil.example:{port}",
                                 _websocket_headers(f"http://rebind.evil.example:{port}"))
            assert status == 403
            status, _ = _request(port, path, f"127.0.0.1:{port}", _websocket_headers(f"http://127.0.0.1:{port}"))
            assert status == 101  # the page's own websocket still opens
        for local in (f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert _request(port, "/", local)[0] == 200
        assert "non-local 'Host'" in server.log_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_past_max_kernels_a_page_says_so_and_starts_nothing(widget_notebook, tmp_path):
    import psutil

    port = dashboard._free_port()
    with dashboard.serve(_command(port, widget_notebook, "MAX_KERNELS=2"), port, tmp_path / "cache",
                         tmp_path / "voila.log") as server:
        for _ in range(2):
            assert _request(port, "/", f"localhost:{port}")[0] == 200
        before = len(server.memory.kernels())
        # Before: every GET started one more kernel (~360 MB with the dashboard), without end.
        for _ in range(3):
            status, page = _request(port, "/", f"localhost:{port}")
            assert status == 503 and "Too many open dashboards" in page and "Close one of them" in page
        assert before == len(server.memory.kernels()) == 2
        assert all(psutil.pid_exists(pid) for pid in server.memory.kernels())


def test_serving_on_a_network_takes_a_token():
    words = shlex.split(dashboard.dashboard_command(8866, "IP=0.0.0.0", "TOKEN=s3cret-token"))
    assert "--Voila.ip=0.0.0.0" in words and "--Voila.token=s3cret-token" in words
    local = shlex.split(dashboard.dashboard_command(8866))
    assert "--Voila.ip=127.0.0.1" in local and not any(w.startswith("--Voila.token") for w in local)
    assert not any("allow_remote_access" in w for w in local)
