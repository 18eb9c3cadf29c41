#!/usr/bin/env python
"""Build the confounder set C (class-average masks) of a round -> HDF5.

CLI:
  confounder.py --cfg JSON --manifest PATH --split train --mask-dir DIR [--mask-dir DIR ...]
                --round T --source seg|pseudo --out confounder.h5 [--threads N]

--cfg: the `context:` section (size, confounder_resize).
--mask-dir (repeatable): label PNG folders, seg_pred/<split>/<shard> (source seg) or
  pseudo_mask/<shard> (source pseudo).
"""

from conta_core.confounder import build_confounder, save_confounder
from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.runtime import base_parser, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--mask-dir", action="append", required=True, help="mask folder (repeatable)")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--source", choices=["seg", "pseudo"], required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg, _ = setup(args, needs_device=False)
    if "size" not in cfg:
        raise SystemExit("--cfg: context.size missing")
    manifest = Manifest.load(args.manifest)
    labels = {i: manifest.labels[i] for i in manifest.ids(args.split)}
    C, counts = build_confounder(index_artifacts(args.mask_dir, ".png"), labels, manifest.num_fg,
                                 tuple(cfg["size"]), resize=cfg.get("confounder_resize", "area"))
    save_confounder(args.out, C, counts, manifest.class_names[1:], args.round, args.source)


if __name__ == "__main__":
    main()
