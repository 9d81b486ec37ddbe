"""Keep MediaPipe's C++ log lines (``W0000 … inference_feedback_manager.cc …``) out of notebooks and the CLI.

MediaPipe logs through absl before absl is initialised, so ``GLOG_minloglevel`` and absl's own flags
do not reach those lines, and its graph threads write them whenever a calculator opens: straight to
file descriptor 2. `install()` (called before MediaPipe is imported, in the caller and in each worker
process) puts a pipe on fd 2 and a thread that passes on everything written to it except those
INFO/WARNING lines (errors, Python's own stderr and tracebacks go through, in order). At exit fd 2 is
given back and what is left in the pipe is passed on.

``CREATEML_WIDGETS_NATIVE_LOGS=1`` turns the filter off (every line is shown, as MediaPipe writes it).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import threading

ENV = "CREATEML_WIDGETS_NATIVE_LOGS"
# absl's prefix: severity letter, MMDD, time, thread, file:line]; and the two lines around them.
_NOISE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]*\] .*"
                    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)$")
_lock = threading.Lock()
_installed_pid: int | None = None
_state: dict = {}


def enabled() -> bool:
    """True when the filter is on (the default); ``CREATEML_WIDGETS_NATIVE_LOGS=1`` turns it off."""
    return os.environ.get(ENV, "").strip().lower() in ("", "0", "false", "no", "off")


def is_noise(line: bytes) -> bool:
    """Whether a line written to fd 2 is one of MediaPipe's INFO/WARNING log lines (or the two around them)."""
    return _NOISE.match(line.rstrip(b"\r\n")) is not None


def filter_lines(data: bytes) -> bytes:
    """`data` without MediaPipe's INFO/WARNING lines."""
    return b"".join(line for line in data.splitlines(keepends=True) if not is_noise(line))


def _pump(read_fd: int, out_fd: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
        # a partial line (a progress bar's "\r…") is passed on at once unless it may be a log line
        if pending and not pending[:1].isalpha():
            kept, pending = kept + pending, b""
        if kept:
            with contextlib.suppress(OSError):
                os.write(out_fd, kept)
    if pending and not is_noise(pending):
        with contextlib.suppress(OSError):
            os.write(out_fd, pending)


def install() -> bool:
    """Filter fd 2 in this process from now on (once per process; a no-op when turned off)."""
    global _installed_pid
    if not enabled():
        return False
    with _lock:
        if _installed_pid == os.getpid():
            return True
        try:
            out_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except OSError:  # no fd 2 (a closed stderr): nothing to filter
            return False
        thread = threading.Thread(target=_pump, args=(read_fd, out_fd), name="cmlw-native-logs", daemon=True)
        thread.start()
        _state.update(out_fd=out_fd, read_fd=read_fd, thread=thread)
        _installed_pid = os.getpid()
        atexit.register(_uninstall)
        return True


def _uninstall() -> None:
    """Give fd 2 back and pass on what is still in the pipe (at exit)."""
    global _installed_pid
    with _lock:
        if _installed_pid != os.getpid():
            return
        _installed_pid = None
        with contextlib.suppress(OSError):
            os.dup2(_state["out_fd"], 2)  # the pipe's last writer here is gone: the pump reads to its end
        thread = _state["thread"]
    thread.join(2)
