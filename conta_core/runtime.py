"""Shared command-line plumbing for the thin scripts in `workflow_scripts/`.

Convention: a rule passes the config sections its step needs as one JSON object
(`--cfg '{params.cfg:q}'` in the rule), plus explicit input/output paths. Snakemake then
reruns a step exactly when its own section changes (params trigger), and the script stays
runnable by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from conta_core.device import claim_device, seed_everything, set_threads


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="JSON object with the config sections this step needs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads / worker processes")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(args: argparse.Namespace, needs_device: bool = True) -> tuple[dict, torch.device]:
    """Parse --cfg, configure logging, threads and seeds; claim a device (GPU lock)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        cfg = json.loads(args.cfg)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--cfg is not valid JSON: {e}")
    set_threads(args.threads)
    seed_everything(args.seed)
    device = claim_device(args.device) if needs_device else torch.device("cpu")
    logging.getLogger("conta").info("device %s, threads %d", device, args.threads)
    return cfg, device


def progress_enabled() -> bool:
    """Progress bars only on a TTY (quiet in Snakemake/SLURM log files)."""
    return sys.stderr.isatty()
