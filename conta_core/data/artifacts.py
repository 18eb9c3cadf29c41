"""Find per-image artifacts (CAMs, IR labels, pseudo-masks, predictions) across shard folders.

Per-image steps write <out>/<shard>/<id><suffix>; a consumer gets the list of shard
folders and looks files up by image id.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_LISTED = 5  # missing ids quoted in an error message


class ArtifactIndex(dict):
    """dict image id -> Path; looking up an unknown id raises ValueError naming it."""

    def __init__(self, entries: dict[str, Path], dirs: list[Path], suffix: str):
        super().__init__(entries)
        self.dirs = list(dirs)
        self.suffix = suffix

    def __missing__(self, image_id: str) -> Path:
        where = ", ".join(str(d) for d in self.dirs)
        raise ValueError(f"no {image_id}{self.suffix} for image id {image_id!r} in {where}")


def index_artifacts(dirs: list[Path], suffix: str) -> ArtifactIndex:
    """Map image id -> file for every `<id><suffix>` directly inside the folders `dirs`.

    Hidden files (the atomic writer's temporaries start with ".") are skipped. Raises
    ValueError when a folder is missing or an id occurs in two folders.
    """
    entries: dict[str, Path] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ValueError(f"artifact folder {d} does not exist")
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(suffix) or not e.is_file():
                    continue
                image_id = e.name[: len(e.name) - len(suffix)]
                if image_id in entries:
                    raise ValueError(f"image id {image_id!r} found twice: {entries[image_id]} and {e.path}")
                entries[image_id] = Path(e.path)
    return ArtifactIndex(dict(sorted(entries.items())), list(map(Path, dirs)), suffix)


def require(index: dict[str, Path], ids: list[str], what: str) -> None:
    """Raise ValueError if any of `ids` is missing from `index`, naming `what` and the first few."""
    missing = [i for i in ids if i not in index]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise ValueError(f"{what}: {len(missing)} of {len(ids)} image ids missing: {shown}{more}")
