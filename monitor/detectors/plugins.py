"""Detector plugins: ``.py`` files in the plugin folders, and the ``dfmon.detectors`` entry points.

A plugin provides detector *factories*: callables ``(MonitorConfig) -> Detector`` that carry
``name`` and ``version`` (a detector class whose ``__init__`` takes the config is one).
What a plugin may export, in order of preference (see plugins/README.md):

- a plugin file: ``DETECTORS = [Factory, ...]``; without it, every class defined in the
  file that has ``name``, ``version`` and ``analyze``;
- an entry point: a factory, a :class:`DetectorSpec`, or a list of them.

Loading must never take the monitor down: a plugin that fails to import, or exports nothing
usable, is logged and returned as a *broken* spec (``error`` set, a factory that raises
:class:`DetectorError`), so ``dfmon detectors`` can show it and a session that enables it gets
an ``error`` event instead of a crash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from monitor.config import MonitorConfig
from monitor.detectors.base import Detector, DetectorSpec
from monitor.errors import DetectorError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dfmon.detectors"
# Relative plugin folders are looked up here as well as in the current directory.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def plugin_dirs(config: MonitorConfig) -> list[Path]:
    """Existing plugin folders from the config, relative ones against the current directory
    and the repository root; each folder once."""
    found: list[Path] = []
    for entry in config.detectors.plugin_dirs:
        path = Path(entry).expanduser()
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPOSITORY_ROOT / path]
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved.is_dir() and resolved not in found:
                found.append(resolved)
    return found


def broken_spec(name: str, source: str, error: str) -> DetectorSpec:
    """A spec that lists a plugin which could not be loaded; creating it raises."""

    def refuse(_config: MonitorConfig) -> Detector:
        raise DetectorError(f"plugin {name} from {source} is broken: {error}")

    return DetectorSpec(name, "broken", source, refuse, error=error)


def spec_from_factory(factory: Any, source: str, default_name: str | None = None) -> DetectorSpec:
    """A :class:`DetectorSpec` for a factory (or a ready spec); TypeError if it is neither."""
    if isinstance(factory, DetectorSpec):
        return factory
    if not callable(factory):
        raise TypeError(f"{factory!r} is not a detector factory (not callable)")
    name = getattr(factory, "name", None) or default_name
    version = getattr(factory, "version", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{factory!r} has no detector name")
    if version is None:
        raise TypeError(f"detector {name} ({factory!r}) has no version")
    return DetectorSpec(name, str(version), source, factory)


def _is_detector_class(obj: Any, module: ModuleType) -> bool:
    return (
        isinstance(obj, type)
        and obj.__module__ == module.__name__
        and isinstance(getattr(obj, "name", None), str)
        and getattr(obj, "version", None) is not None
        and callable(getattr(obj, "analyze", None))
    )


def specs_from_module(module: ModuleType, source: str) -> list[DetectorSpec]:
    """What a plugin file exports: DETECTORS, else the detector classes it defines."""
    exported = getattr(module, "DETECTORS", None)
    if exported is None:
        exported = [obj for obj in vars(module).values() if _is_detector_class(obj, module)]
    elif not isinstance(exported, list | tuple):
        raise TypeError("DETECTORS must be a list of detector factories")
    if not exported:
        raise TypeError("exports no detector (define DETECTORS = [...] or a detector class)")
    return [spec_from_factory(factory, source) for factory in exported]


def load_plugin_file(path: Path) -> list[DetectorSpec]:
    """Import one plugin file under a private module name and return its specs (or one broken)."""
    source = f"plugins/{path.name}" if path.parent.name == "plugins" else str(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"dfmon_plugin_{path.stem}_{digest}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return specs_from_module(module, source)
    except Exception as exc:
        log.warning("detector plugin %s is broken: %s: %s", path, type(exc).__name__, exc)
        return [broken_spec(path.stem, source, f"{type(exc).__name__}: {exc}")]


def file_plugins(config: MonitorConfig) -> list[DetectorSpec]:
    specs: list[DetectorSpec] = []
    for folder in plugin_dirs(config):
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue  # __init__.py, helpers
            specs.extend(load_plugin_file(path))
    return specs


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def entry_point_plugins() -> list[DetectorSpec]:
    specs: list[DetectorSpec] = []
    for entry_point in _entry_points():
        dist = getattr(entry_point, "dist", None)
        source = f"entry point {dist.name if dist is not None else entry_point.value}"
        try:
            loaded = entry_point.load()
            factories = loaded if isinstance(loaded, list | tuple) else [loaded]
            specs.extend(
                spec_from_factory(f, source, default_name=entry_point.name) for f in factories
            )
        except Exception as exc:
            log.warning(
                "detector entry point %s is broken: %s: %s",
                entry_point.name,
                type(exc).__name__,
                exc,
            )
            specs.append(broken_spec(entry_point.name, source, f"{type(exc).__name__}: {exc}"))
    return specs


def discover_plugins(config: MonitorConfig) -> list[DetectorSpec]:
    """Entry-point detectors, then plugin-file detectors (a file may override an installed one)."""
    return entry_point_plugins() + file_plugins(config)
