"""Reusable parts of the training tools (data preparation, training loops, calibration)."""
