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
from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.runtime import base_parser, setup
from conta_core.shards import shard_ids


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--xm-dir", action="append", default=None, help="X_m folder (repeatable)")
    args = p.parse_args()
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    ids = shard_ids(manifest.ids(args.split), args.shard, args.num_shards)
    xm_files = index_artifacts(args.xm_dir, ".png") if args.xm_dir else None
    make_cams(manifest, ids, args.model, args.out_dir, cfg, device, xm_files=xm_files)


if __name__ == "__main__":
    main()
