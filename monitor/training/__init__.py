"""Offline work on recorded clips: training, calibration and evaluation data.

Nothing here runs in a session. The tools under ``tools/`` are thin command lines over
this package and :mod:`monitor.evaluation`; every window made here is cut by the
session's windower (:mod:`monitor.windows`), so models are trained and measured on the
windows the product scores.

- :mod:`monitor.training.faces`: tracked faces of a clip, cached; face-only windows.
- :mod:`monitor.training.sync_data`: the sync model's clip splits, extraction jobs and cache.
- :mod:`monitor.training.call_variants`: re-encoding a clip as a call would deliver it.
- :mod:`monitor.training.artifact_data`, :mod:`monitor.training.artifact`: the artifact
  detector's self-blended samples, paired training and calibration.
"""
