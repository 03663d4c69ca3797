"""Which clips an evaluation uses: every media file of a directory, or a MANIFEST.tsv's rows.

A MANIFEST (the format of ``shared/data/*/MANIFEST.tsv``) names each clip's ``file``,
``label`` (real or fake), ``has_audio`` and ``notes``. Genuine clips are real rows with
audio; rows marked DUPLICATE SOURCE repeat another row's speech and are skipped so no
speaker counts twice. Fake rows with audio are the known fakes; those whose notes say
LIPSYNC-FAKE (a real video re-lipped to other speech) are flagged. The project's readers of
a MANIFEST (evaluations, training data, tools) take its rows from :func:`manifest_rows`
(:func:`read_manifest` also checks the columns) and these two marks from
:func:`is_duplicate` and :func:`is_lipsync_fake`; only the sync model's training selection
keeps an older duplicate rule, the one its committed weights were trained with
(``monitor.training.sync_data.Clip.duplicate``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import ConfigError, MediaNotFoundError


def default_data_root(repo: Path) -> Path:
    """Where ``shared/data`` is: ``$DFMON_DATA``, else beside the checkout, or beside its
    parent (a worktree one level further down, as in ``wt/NAME``)."""
    if os.environ.get("DFMON_DATA"):
        return Path(os.environ["DFMON_DATA"])
    for base in (repo.parent, repo.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return repo.parent / "shared" / "data"


MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v"}
REQUIRED_COLUMNS = ("file", "label", "has_audio")


@dataclass(frozen=True)
class ClipEntry:
    path: Path
    label: str  # "real" or "fake"
    has_audio: bool
    lipsync_fake: bool = False
    duplicate: bool = False
    notes: str = ""

    @property
    def name(self) -> str:
        return self.path.stem


def read_inputs(location: str | Path) -> list[ClipEntry]:
    """The clips of a directory (all genuine) or of a MANIFEST.tsv file, in a stable order."""
    location = Path(location)
    if location.is_dir():
        manifest = location / "MANIFEST.tsv"
        if manifest.exists():
            return read_manifest(manifest)
        files = sorted(p for p in location.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise MediaNotFoundError(
                f"no media files ({', '.join(sorted(MEDIA_SUFFIXES))}) in {location}"
            )
        return [ClipEntry(path, "real", True) for path in files]
    if location.is_file():
        return read_manifest(location)
    raise MediaNotFoundError(f"evaluation input not found: {location}")


def read_manifest(path: Path) -> list[ClipEntry]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path} is not a manifest: no column {', '.join(missing)}")
        entries = []
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in ("real", "fake"):
                raise ConfigError(
                    f"{path}:{line}: label must be real or fake, got {row['label']!r}"
                )
            clip = path.parent / row["file"].strip()
            if not clip.exists():
                raise MediaNotFoundError(f"{path}:{line}: clip not found: {clip}")
            notes = (row.get("notes") or "").strip()
            entries.append(
                ClipEntry(
                    path=clip,
                    label=label,
                    has_audio=(row["has_audio"] or "").strip().lower() in ("yes", "true", "1"),
                    lipsync_fake=is_lipsync_fake(notes),
                    duplicate=is_duplicate(notes),
                    notes=notes,
                )
            )
    return entries


def manifest_rows(directory: Path) -> list[dict[str, str]]:
    """The raw rows of ``directory/MANIFEST.tsv`` (the temporal tools read every column)."""
    with open(directory / "MANIFEST.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def is_duplicate(notes: str) -> bool:
    """DUPLICATE SOURCE rows repeat another row's recording: count it once."""
    return notes.startswith("DUPLICATE SOURCE") or "DUPLICATE SOURCE of" in notes


def is_duplicate_row(row: dict[str, str]) -> bool:
    return is_duplicate(row.get("notes") or "")


def is_lipsync_fake(notes: str) -> bool:
    """A real video whose mouth was regenerated to other speech, as the notes mark it."""
    return "LIPSYNC-FAKE" in notes.upper()


def genuine_clips(entries: list[ClipEntry]) -> list[ClipEntry]:
    return [e for e in entries if e.label == "real" and e.has_audio and not e.duplicate]


def known_fakes(entries: list[ClipEntry]) -> list[ClipEntry]:
    """Fakes with a soundtrack (the genuine set has one too, so the comparison is fair)."""
    return [e for e in entries if e.label == "fake" and e.has_audio and not e.duplicate]
