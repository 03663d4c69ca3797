"""Which detectors exist and how a session gets its own instances.

Built-in detectors are registered here; plugins from the ``plugins/`` folder and the
``dfmon.detectors`` entry-point group are discovered by :mod:`monitor.detectors.plugins`.
"""

from __future__ import annotations

import logging

from monitor.config import MonitorConfig
from monitor.detectors.base import Detector, DetectorSpec

log = logging.getLogger(__name__)


def create_lip_sync_detector(config: MonitorConfig) -> Detector:
    """The learned sync model when selected and usable, else the training-free baseline."""
    from monitor.detectors.baseline_sync import BaselineSyncDetector

    if config.lip_sync.model == "learned":
        try:
            from monitor.detectors.lip_sync_learned import LearnedSyncDetector

            return LearnedSyncDetector(config)
        except Exception as exc:  # missing weights or backend: fall back, loudly
            log.warning("learned lip-sync model unavailable (%s); using the baseline", exc)
    return BaselineSyncDetector(config)


def builtin_specs() -> list[DetectorSpec]:
    return [DetectorSpec("lip_sync", "1", "builtin", create_lip_sync_detector)]


def discover(config: MonitorConfig) -> dict[str, DetectorSpec]:
    specs = {spec.name: spec for spec in builtin_specs()}
    try:
        from monitor.detectors.plugins import discover_plugins
    except ImportError:
        return specs
    for spec in discover_plugins(config):
        if spec.error is not None and spec.name in specs and specs[spec.name].error is None:
            log.warning("broken %s from %s ignored: %s", spec.name, spec.source, spec.error)
            continue
        if spec.name in specs:
            log.warning(
                "detector %s from %s shadows %s", spec.name, spec.source, specs[spec.name].source
            )
        specs[spec.name] = spec
    return specs


def enabled_specs(config: MonitorConfig) -> list[DetectorSpec]:
    specs = discover(config)
    chosen = []
    for name in config.detectors.enabled:
        if name in config.detectors.disabled:
            continue
        if name not in specs:
            log.warning("detector %s is enabled in the config but not installed", name)
            continue
        chosen.append(specs[name])
    return chosen
