"""dfmon: a real-time deepfake monitor for video calls.

Data flows one way: source -> timestamped media -> features -> windows ->
detectors -> risk fusion -> sinks.
"""

__version__ = "0.1.0"
