"""Keep MediaPipe's C++ log lines (``W0000 … inference_feedback_manager.cc …``) out of notebooks and the CLI.

MediaPipe logs through absl before absl is initialised, so ``GLOG_minloglevel`` and absl's own flags
do not reach those lines, and its graph threads write them whenever a calculator opens: straight to
file descriptor 2. `install()` (called before MediaPipe is imported, in the caller and in each worker
process) puts a pipe on fd 2 and a thread that passes on everything written to it except those
INFO/WARNING lines (errors, Python's own stderr and tracebacks go through, in order). At exit fd 2 is
given back and what is left in the pipe is passed on.

Something else may put its own file on fd 2 later (pytest does before every test, to capture it): each
`install()` (every detector built) then passes the pipe's output on to that file and puts the pipe back
on fd 2, so the lines a new MediaPipe graph writes are filtered there too. A log line written into the
middle of a progress bar's line (``\rExtracting 3/40W0000 …``) is cut out and the bar's text kept.

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
_LOG = rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]*\] .*"
_NOISE = re.compile(rb"^(?:" + _LOG + rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are "
                    rb"written to STDERR|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)$")
# the same line written after a partial line of someone else's (a progress bar's text, ending in \r…)
_NOISE_INSIDE = re.compile(rb"(?<=[^\n])" + _LOG + rb"$")
_lock = threading.Lock()
_installed_pid: int | None = None
_state: dict = {}


def enabled() -> bool:
    """True when the filter is on (the default); ``CREATEML_WIDGETS_NATIVE_LOGS=1`` turns it off."""
    return os.environ.get(ENV, "").strip().lower() in ("", "0", "false", "no", "off")


def is_noise(line: bytes) -> bool:
    """Whether a line written to fd 2 is one of MediaPipe's INFO/WARNING log lines (or the two around them)."""
    return _NOISE.match(line.rstrip(b"\r\n")) is not None


def _clean(line: bytes) -> bytes:
    """`line` (with its newline) as it is passed on: b"" for a log line, the rest of a line that has one
    written into it."""
    if is_noise(line):
        return b""
    body = line.rstrip(b"\r\n")
    inside = _NOISE_INSIDE.search(body)
    return line if inside is None else body[:inside.start()]


def filter_lines(data: bytes) -> bytes:
    """`data` without MediaPipe's INFO/WARNING lines."""
    return b"".join(_clean(line) for line in data.splitlines(keepends=True))


def _write(data: bytes) -> None:
    with _lock:  # install() may be moving the output to another file
        with contextlib.suppress(OSError, KeyError):
            os.write(_state["out_fd"], data)


def _pump(read_fd: int) -> None:
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
        kept = b"".join(_clean(line + b"\n") for line in lines)
        # a partial line (a progress bar's "\r…") is passed on at once unless it may be a log line
        if pending and not pending[:1].isalpha():
            kept, pending = kept + pending, b""
        if kept:
            _write(kept)
    if pending:
        _write(_clean(pending))


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def install() -> bool:
    """Filter fd 2 in this process from now on (a no-op when turned off). Called again, it keeps the
    filter on fd 2 if something has put another file there since (passing the output on to that file)."""
    global _installed_pid
    if not enabled():
        return False
    with _lock:
        if _installed_pid == os.getpid():
            if not _same_file(2, _state["write_fd"]):
                _repoint()
            return True
        try:
            out_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
        except OSError:  # no fd 2 (a closed stderr): nothing to filter
            return False
        _state.update(out_fd=out_fd, read_fd=read_fd, write_fd=write_fd)
        thread = threading.Thread(target=_pump, args=(read_fd,), name="cmlw-native-logs", daemon=True)
        thread.start()
        _state["thread"] = thread
        _installed_pid = os.getpid()
        atexit.register(_uninstall)
        return True


def _repoint() -> None:
    """(Under the lock.) fd 2 is another file now: pass the pipe's output on to it; the pipe goes back on fd 2."""
    try:
        new_out = os.dup(2)
    except OSError:
        return
    old_out = _state["out_fd"]
    try:
        os.dup2(_state["write_fd"], 2)
    except OSError:
        os.close(new_out)
        return
    _state["out_fd"] = new_out
    with contextlib.suppress(OSError):
        os.close(old_out)


def _uninstall() -> None:
    """Give fd 2 back and pass on what is still in the pipe (at exit)."""
    global _installed_pid
    with _lock:
        if _installed_pid != os.getpid():
            return
        _installed_pid = None
        with contextlib.suppress(OSError):
            os.dup2(_state["out_fd"], 2)
        with contextlib.suppress(OSError):
            os.close(_state["write_fd"])  # the pipe's last writer here is gone: the pump reads to its end
        thread = _state["thread"]
    thread.join(2)
