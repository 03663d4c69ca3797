"""Detectors: each turns one analysis window into evidence with a score and a rationale."""
