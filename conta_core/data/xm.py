"""X_m, the context input of CONTA: loading an image's X_m file and the placebo pairing.

X_m is the image's segmentation mask of round t - 1 (a label PNG: 0 bg, 1..C, 255 ignore).
Placebo control (`context.mode: placebo`): the same network and training, but every image
is given the X_m of another training image (`placebo_partners`: a fixed derangement of the
ids, independent of the run seed), resized to its own size. CONTA - placebo isolates the
effect of image-specific context; CONTA - none also includes the extra input channel.
The encoding of X_m and the attention over the confounder set: conta_core.models.context.
"""

from __future__ import annotations

import os

import numpy as np

from conta_core.data.transforms import resize_label
from conta_core.infra.config import config_error
from conta_core.infra.fileio import load_label_png, load_map_for

PLACEBO_SEED = 20201204  # [OURS] fixed: the placebo pairing does not change with the run seed


def placebo_partners(ids: list[str]) -> dict[str, str]:
    """A fixed derangement of `ids`: image id -> the id whose X_m it gets under context.mode placebo.

    The sorted ids are shuffled with PLACEBO_SEED and each is paired with the next one in
    that order (one cycle, so no image keeps its own X_m when there are two or more).
    Depends only on the set of ids, so every shard and every step sees the same pairing.
    """
    order = sorted(set(ids))
    if len(order) < 2:
        raise config_error("context.mode", f"placebo needs X_m of at least 2 images, got {len(order)}")
    perm = np.random.Generator(np.random.PCG64(PLACEBO_SEED)).permutation(len(order))
    cycle = [order[i] for i in perm]
    return {cycle[k]: cycle[(k + 1) % len(cycle)] for k in range(len(cycle))}


class PlaceboFiles(dict):
    """image id -> the placebo partner's X_m file; `load_xm` resizes those to the image size."""


def placebo_xm_files(xm_files: dict[str, os.PathLike]) -> PlaceboFiles:
    """xm_files with every image's X_m file replaced by its placebo partner's."""
    partners = placebo_partners(list(xm_files))
    return PlaceboFiles({i: xm_files[partners[i]] for i in xm_files})


def load_xm(files: dict[str, os.PathLike], image_id: str, shape: tuple[int, int]) -> np.ndarray:
    """uint8[H, W] X_m of `image_id` for an image of size `shape`.

    ValueError naming the id when it has no file, and naming the file when its size differs
    from the image's; placebo files (PlaceboFiles) are resized to the image size instead
    (nearest neighbour), since the partner image may have another size.
    """
    if isinstance(files, PlaceboFiles):
        if image_id not in files:
            raise ValueError(f"no X_m file for image id {image_id!r}")
        m = load_label_png(files[image_id])
        return m if m.shape == tuple(shape) else resize_label(m, tuple(shape))
    return load_map_for(files, image_id, shape, "X_m")
