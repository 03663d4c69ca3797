"""The one event fan-out: every event of every session, replayed or live, to every sink.

Receivers are called in turn with each event and must not block: the JSONL file writes
one line, the websocket queues per client, an alert sink queues a notice
(:class:`~monitor.sinks.delivery.SinkWorker`). A receiver that raises is counted and
logged (the first failure with its traceback, then the 10th, 100th, ...) and never stops
the others or the analysis; one slower than ``slow_s`` is logged the same way.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Receiver = Callable[[dict[str, Any]], None]


def worth_logging(count: int) -> bool:
    """1, 10, 100, ...: a receiver failing on every event does not flood the log."""
    while count % 10 == 0:
        count //= 10
    return count == 1


class EventFanout:
    def __init__(
        self, receivers: Iterable[tuple[str, Receiver]] = (), *, slow_s: float = 0.05
    ) -> None:
        self._receivers: list[tuple[str, Receiver]] = []
        self.slow_s = slow_s
        self.published: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.slow: Counter[str] = Counter()
        for name, receiver in receivers:
            self.add(name, receiver)

    def add(self, name: str, receiver: Receiver) -> None:
        if any(name == known for known, _ in self._receivers):
            raise ValueError(f"two receivers named {name!r}")
        self._receivers.append((name, receiver))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._receivers]

    def publish(self, event: dict[str, Any]) -> None:
        for name, receiver in self._receivers:
            started = time.perf_counter()
            try:
                receiver(event)
            except Exception:
                self.failed[name] += 1
                if worth_logging(self.failed[name]):
                    log.exception(
                        "sink %s failed on a %s event (%d failures so far)",
                        name,
                        event.get("type"),
                        self.failed[name],
                    )
                continue
            self.published[name] += 1
            took = time.perf_counter() - started
            if took > self.slow_s:
                self.slow[name] += 1
                if worth_logging(self.slow[name]):
                    log.warning(
                        "sink %s took %.0f ms for one event (%d slow calls so far)",
                        name,
                        took * 1000,
                        self.slow[name],
                    )

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            name: {"sent": self.published[name], "failed": self.failed[name]} for name in self.names
        }
