"""The ``temporal`` detector: mouth-against-face consistency over time (see :mod:`.detector`)."""

from monitor.detectors.temporal.detector import TemporalDetector, create_temporal_detector

__all__ = ["TemporalDetector", "create_temporal_detector"]
