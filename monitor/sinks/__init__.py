"""Sinks: where events go, and how alerts reach the people who act on them.

Every event of every session, replayed or live, passes through one
:class:`~monitor.sinks.fanout.EventFanout`, which calls each receiver in turn and
isolates the ones that fail: the JSONL file (``jsonl.py``), the ``/alerts`` websocket
(``websocket.py``), the HTML report's list, and one :class:`~monitor.sinks.delivery.SinkWorker`
per alert sink configured with ``--sink KIND:TARGET`` or ``[sinks] targets``.

An alert sink is three layers, each usable on its own (``dfmon sinks``,
:mod:`monitor.bus.consumer`, runs the policy and the core over a Redis stream, with
the stream as its queue):

1. **Policy** (``notices.py``): :class:`~monitor.sinks.notices.NoticePolicy` turns events
   into the payloads a sink delivers: the selected event types, alerts throttled to one
   per participant per interval, a clear-again notice, an idempotency key ``id`` that
   depends only on the event (the same for every retry, sink and re-read).
2. **Core** (one module per kind): ``await sink.deliver(payload) -> Outcome``, one attempt,
   no queueing; the payload formats are pure functions beside it (``webhook_request``,
   ``hec_event``, ``syslog_message``, ``synthetic_media_report``).
3. **Shell** (``delivery.py``): :func:`~monitor.sinks.delivery.deliver_with_retries`
   (timeout per attempt, exponential backoff with jitter), a bounded queue per sink that
   drops the oldest into a dead-letter JSONL file, counters, and one thread with its
   own event loop for all sinks so no endpoint can stall the analysis.

``build.py`` assembles them from the config, ``targets.py`` parses targets and the
``--sink`` flag, ``signing.py`` signs and verifies Standard Webhooks. The formats, the
throttling rules and the receiving side are documented in docs/ALERTS.md.
"""
