"""Why did the monitor raise this alert? Attribution, its faithfulness, live explanations.

* :mod:`monitor.explain.inputs`: one window's evidence (mouth crops, lip geometry,
  log-mel) and the units it is cut into (time segments, mouth regions, mel bands).
* :mod:`monitor.explain.attribution`: white-box integrated gradients / gradient x input
  on a torch module, black-box occlusion on any scoring function.
* :mod:`monitor.explain.faithfulness`: the deletion test against random deletion.
* :mod:`monitor.explain.sync_target`: the learned sync model as an explainable score.
* :mod:`monitor.explain.explainer`: both methods on one window, with their faithfulness.
* :mod:`monitor.explain.live`: the compact explanation carried by ``alert`` events.

Heavy imports (torch, the sync model) stay inside the modules that need them, so the
pipeline's ``from monitor.explain.live import compact_explanation`` costs nothing.
"""
