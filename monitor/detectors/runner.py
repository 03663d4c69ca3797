"""One worker thread per detector, so that a call that never returns can be abandoned.

Python cannot stop a thread, so a hung ``analyze`` (an endless loop, a deadlock) cannot be
killed, only left behind: the session stops waiting for it after its time budget, never
sends that runner anything again, and goes on with the other detectors. The thread is a
daemon, so it does not keep the process alive; it ends by itself if the call ever returns.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


class CallTimeout(Exception):
    """A call did not return within its timeout; its runner is abandoned."""


class _Call:
    """One call handed to the worker; the worker fills it in, then sets ``done``.

    Each call has its own slot, so a late result of an abandoned call lands in an object
    nobody reads any more and can never be mistaken for the answer to a later call.
    ``waited``: someone waits for the result (:meth:`DetectorRunner.call`); otherwise it
    was submitted in the background (:meth:`DetectorRunner.submit`).
    """

    __slots__ = ("done", "error", "fn", "result", "seconds", "waited")

    def __init__(self, fn: Callable[[], object], waited: bool = True) -> None:
        self.fn = fn
        self.waited = waited
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.seconds = 0.0


class DetectorRunner:
    """Runs one detector's calls, one at a time, on its own daemon thread.

    Not thread-safe: the one thread that drives a session calls :meth:`call` and
    :meth:`close`. The detector itself only ever runs on the worker thread (``summarize``
    included), so it sees a single thread, as it did when it was called inline.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.abandoned = False
        self.background_seconds = 0.0  # time spent on submitted (not waited-for) calls
        self._background_error: BaseException | None = None
        self._closed = False
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._work, name=f"dfmon-detector-{name}", daemon=True
        )
        self._thread.start()

    def call(self, fn: Callable[[], T], timeout: float) -> tuple[T, float]:
        """Run ``fn()`` on the worker; return its result and how long it ran, in seconds.

        Re-raises what ``fn`` raised. Raises :class:`CallTimeout` when ``fn`` has not returned
        after ``timeout`` seconds; the runner is then abandoned and takes no more calls.
        """
        self._check_open()
        call = _Call(fn)
        self._calls.put(call)
        if not call.done.wait(min(timeout, threading.TIMEOUT_MAX)):
            self.abandoned = True
            self._calls.put(None)  # should the call ever return, the thread ends there
            raise CallTimeout(f"detector {self.name}: no result after {timeout:.2f} s")
        if self._background_error is not None:  # a submitted call failed before this one
            error, self._background_error = self._background_error, None
            raise error
        if call.error is not None:
            raise call.error
        return cast(T, call.result), call.seconds

    def submit(self, fn: Callable[[], object]) -> None:
        """Queue ``fn()`` without waiting for it (per-frame work as frames arrive).

        Calls run in the order given, so a :meth:`call` made later sees the effect of
        every call submitted before it; its time budget covers the queue ahead of it. The
        first error a submitted call raises is raised by the next :meth:`call`.
        """
        self._check_open()
        self._calls.put(_Call(fn, waited=False))

    def _check_open(self) -> None:
        if self.abandoned or self._closed:
            raise RuntimeError(f"the runner of detector {self.name} takes no more calls")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker and wait for it, unless it was abandoned (a hung call never ends)."""
        if self._closed:
            return
        self._closed = True
        if self.abandoned:
            return
        self._calls.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            started = time.perf_counter()
            try:
                call.result = call.fn()
            except BaseException as exc:  # handed to the caller, who decides what is fatal
                call.error = exc
            call.seconds = time.perf_counter() - started
            if not call.waited:
                self.background_seconds += call.seconds
                if call.error is not None and self._background_error is None:
                    self._background_error = call.error
            call.done.set()
            del call  # drop the window and result before waiting for the next call
