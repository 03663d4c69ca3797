"""The ``artifact`` detector: blending traces of pasted faces (see :mod:`.detector`)."""

from monitor.detectors.artifact.detector import ArtifactDetector, create_artifact_detector

__all__ = ["ArtifactDetector", "create_artifact_detector"]
