"""Events as JSON Lines: one compact event per line, flushed at once.

Flushing every line lets ``tail -f`` and pipes (``dfmon replay ... | jq``) see each
event as soon as it is emitted, at a cost that is negligible at a few events per second.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from monitor.errors import OutputError
from monitor.events import dumps


class JsonlSink:
    """Writes event dicts to a file, or to stdout when ``path`` is None or ``"-"``.

    Several sessions (threads) may share one sink: a lock keeps their lines whole.
    """

    def __init__(self, path: str | Path | None, *, append: bool = False) -> None:
        self.path = None if path is None or str(path) == "-" else Path(path)
        self._lock = threading.Lock()
        if self.path is None:
            self._file: TextIO = sys.stdout
            return
        if self.path.is_dir():
            raise OutputError(f"cannot write events to {self.path}: it is a directory")
        if not self.path.parent.is_dir():
            raise OutputError(
                f"cannot write events to {self.path}: directory {self.path.parent} does not exist"
            )
        try:
            self._file = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"cannot write events to {self.path}: {exc.strerror}") from exc

    def write(self, event: dict[str, Any]) -> None:
        line = dumps(event) + "\n"  # serialise first: a bad event never leaves half a line
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close the file; stdout is flushed but left open for the rest of the program."""
        with self._lock:
            if self.path is None:
                self._file.flush()
            else:
                self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
