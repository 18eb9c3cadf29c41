#!/usr/bin/env python
"""SEAM's low / high-alpha CRF labels (AffinityNet's training labels) for one shard (method: seam).

CLI:
  make_seam_crf_label.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                         --cams-dir DIR [--cams-dir DIR ...] --out-dir DIR [--threads N]

--cfg: {"crf_alphas", "crf"} (the seam section's). Writes <id>.npz {"keys", "la", "ha"} and
<id>.png (the full-size AffinityNet label, class ids, 255 unknown); existing outputs are kept.
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.infra.fileio import CAM_SUFFIX
from conta_core.script import add_shard_args, base_parser, script_doc, script_main, select_shard, setup
from conta_core.steps.seam import make_seam_crf_labels


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p)
    p.add_argument("--cams-dir", action="append", required=True)
    p.add_argument("--out-dir", required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    manifest, ids = select_shard(args)
    make_seam_crf_labels(manifest, ids, index_artifacts(args.cams_dir, CAM_SUFFIX), args.out_dir, cfg)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
