#!/usr/bin/env python
"""Pre-train the backbone on generated isolated objects (the synthetic stand-in for ImageNet).

Usage:
    pretrain.py --cfg JSON --out PATH --log CSV [--device auto] [--threads N] [--seed S]

--cfg      the `pretrain` config section as JSON
--out      output weights (pretrain/<backbone>.pth): a torchvision ResNet state_dict without fc,
           for the `pretrained:` keys of classifier / segmentation / irn / amn
--log      per-iteration training log CSV (epoch, iter, loss, lr)
--device   auto | cpu | cuda | cuda:K (default auto)
--threads  torch intra-op threads
--seed     seed of the generated source images, initialisation and shuffling (default 0)
"""

from __future__ import annotations

from pathlib import Path

from conta_core.pretrain import pretrain_backbone
from conta_core.runtime import base_parser, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    args = p.parse_args()
    cfg, device = setup(args)
    pretrain_backbone(cfg, args.seed, args.out, device, args.log)


if __name__ == "__main__":
    main()
