"""Evaluation and benchmark parts shared by ``tools/eval.py`` and ``tools/bench.py``.

- :mod:`monitor.evaluation.metrics`: ROC AUC, EER, TPR at a fixed FPR, time to alert,
  false alerts per hour, in numpy only (no scikit-learn at run time).
- :mod:`monitor.evaluation.variants`: manipulated variants of genuine clips (shifted,
  swapped, dubbed, frozen, looped, partly desynchronized), every one re-encoded the same way.
- :mod:`monitor.evaluation.dataset`: which clips a directory or a MANIFEST.tsv offers.
- :mod:`monitor.evaluation.scoring`: one variant through the real pipeline, condensed.
- :mod:`monitor.evaluation.report`: per-category figures, Markdown, JSON and the ROC plot.
- :mod:`monitor.evaluation.livesim` and :mod:`monitor.evaluation.syncnet_arch`: parts of
  the benchmark (concurrent live sessions, SyncNet's architecture cost).
"""
