"""Native libraries' start-up chatter kept off stderr unless the user asks for it.

MediaPipe and TensorFlow Lite log from C++ (absl, TFLite's own logger) straight to file
descriptor 2 when a graph starts and on its first frame: "Created TensorFlow Lite XNNPACK
delegate", "All log messages before absl::InitializeLog()", feedback-manager warnings.
Neither ``GLOG_minloglevel`` nor ``TF_CPP_MIN_LOG_LEVEL`` reaches them (MediaPipe 0.10.21
uses absl logging without initializing it), and Python's ``logging`` never sees them.

So while such a library starts (:func:`hold`, or the :func:`filtered_native_stderr`
block), fd 2 points at a pipe; when the last hold is released every line is written back
except those in the native log formats: the program's own messages written meanwhile
(from any thread) are delayed, never lost. ``dfmon --verbose`` (or
``DFMON_NATIVE_LOGS=1``) turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# absl/glog lines ("W0000 00:00:1796155744.092416 18102 file.cc:114] ...") and the two
# fixed start-up lines of TFLite and absl.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ ]+:\d+\] .*"
    rb"|INFO: Created TensorFlow Lite .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)$"
)

_show_native = os.environ.get("DFMON_NATIVE_LOGS", "") not in ("", "0")
_lock = threading.Lock()
_depth = 0
_active: _Capture | None = None


def show_native_logs(show: bool) -> None:
    """True: native libraries write to stderr unfiltered (``--verbose``)."""
    global _show_native
    _show_native = show


class _Capture:
    """fd 2 redirected into a pipe drained by a thread, until :meth:`stop`."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self.saved_fd = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(
            target=self._drain, args=(read_end,), name="native-stderr", daemon=True
        )
        self._reader.start()

    def _drain(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                self._chunks.append(chunk)

    def stop(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved_fd, 2)  # closes the pipe's last write end: the reader sees EOF
        os.close(self.saved_fd)
        self._reader.join(timeout=5.0)
        kept = [
            line
            for line in b"".join(self._chunks).splitlines(keepends=True)
            if not NATIVE_LINE.match(line.rstrip(b"\r\n"))
        ]
        if kept:
            os.write(2, b"".join(kept))


class Hold:
    """One user's claim on the filter; :meth:`release` is idempotent."""

    def __init__(self) -> None:
        global _depth, _active
        self._held = not _show_native
        if not self._held:
            return
        with _lock:
            if _depth == 0:
                try:
                    _active = _Capture()
                except OSError:  # no fd 2 to redirect (a daemon): nothing to filter
                    _active = None
            _depth += 1

    def release(self) -> None:
        global _depth, _active
        if not self._held:
            return
        self._held = False
        with _lock:
            _depth -= 1
            if _depth == 0 and _active is not None:
                _active.stop()
                _active = None


def hold() -> Hold:
    """Filter native log lines off fd 2 (any thread) until the hold is released.

    Holds nest and may be taken from several threads; one capture serves them all and
    ends with the last release.
    """
    return Hold()


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """:func:`hold` for the duration of a block."""
    claim = hold()
    try:
        yield
    finally:
        claim.release()


def stderr_is_terminal() -> bool:
    """Whether the real stderr is a terminal, also while fd 2 points at the filter's pipe."""
    with _lock:
        fd = _active.saved_fd if _active is not None else 2
        try:
            return os.isatty(fd)
        except OSError:
            return False
