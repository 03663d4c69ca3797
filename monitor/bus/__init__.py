"""The event bus: many monitor workers, one place their events and their load meet.

Redis Streams carry it (docs/SCALE.md has the design and the figures):

- each ``dfmon serve --bus URL`` worker publishes every event of its sessions
  (:mod:`monitor.bus.publisher`) and heartbeats its load (:mod:`monitor.bus.worker`);
- ``dfmon gateway`` redirects WHIP offers to the least-loaded worker, serves every
  worker's events on one ``/alerts`` websocket and ends the sessions of a worker whose
  heartbeat expired (:mod:`monitor.bus.gateway`);
- ``dfmon sinks`` runs the alert sinks of :mod:`monitor.sinks` as consumer groups
  (:mod:`monitor.bus.consumer`).

Key names live in :class:`monitor.bus.connection.BusKeys`.
"""
