#!/usr/bin/env python
"""Multi-scale CAMs of one shard of a split (IRNet make_cam); resumes by skipping existing files.

CLI:
  make_cam.py --cfg JSON --manifest PATH --split train --shard K --num-shards N
              --model MODEL.pth --out-dir DIR [--xm-dir DIR ...]
              [--device auto] [--threads N] [--seed S]

--cfg: the `cam:` section (scales, flip, ...).
--out-dir: round<t>/cam/<K>; writes <id>.npy (keys, cam, high_res) per image of shard K.
--xm-dir (repeatable): X_m label PNG folders, required for context classifiers (t > 0).
"""

from conta_core.cam import make_cams
from conta_core.runtime import add_shard_args, add_xm_args, base_parser, select_shard, setup, xm_index


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    add_shard_args(p, shard_defaults=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", required=True)
    add_xm_args(p)
    args = p.parse_args()
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    make_cams(manifest, ids, args.model, args.out_dir, cfg, device, xm_files=xm_index(args))


if __name__ == "__main__":
    main()
