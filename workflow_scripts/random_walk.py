#!/usr/bin/env python
"""Pseudo-masks by IRNet's boundary-guided random walk for one shard of a split.

Usage:
    random_walk.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                   --cams-dir DIR [--cams-dir DIR ...] --irn PATH --out-dir DIR
                   [--device auto] [--threads N]

--cfg        the `random_walk` config section as JSON: {"radius", "beta", "exp_times", "bg_threshold"}
--manifest   dataset manifest JSON
--split      split whose images get pseudo-masks (default: train)
--shard K / --num-shards N   this job's shard (conta_core.shards.shard_ids of the split's ids)
--cams-dir   a folder of <id>.npy CAMs; repeat for every CAM shard folder of the round
--irn        the round's IRN checkpoint (irn/model.pth, from train_irn.py)
--out-dir    output folder; writes <id>.png VOC-palette masks (0 bg, 1..C class)
--device     auto | cpu | cuda | cuda:K (default auto)
--threads    torch intra-op threads
Existing outputs are kept (resume).
"""

from __future__ import annotations

from pathlib import Path

from conta_core.irn import index_artifacts
from conta_core.random_walk import make_pseudo_masks
from conta_core.runtime import add_shard_args, base_parser, select_shard, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    add_shard_args(p)
    p.add_argument("--cams-dir", type=Path, action="append", required=True)
    p.add_argument("--irn", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args()
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    make_pseudo_masks(manifest, ids, index_artifacts(args.cams_dir, ".npy"), args.irn, args.out_dir, cfg, device)


if __name__ == "__main__":
    main()
