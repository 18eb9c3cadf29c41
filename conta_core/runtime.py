"""Shared command-line plumbing for the thin scripts in `workflow_scripts/`.

Convention: a rule passes the config sections its step needs as one JSON object
(`--cfg '{params.cfg:q}'` in the rule), plus explicit input/output paths. Snakemake then
reruns a step exactly when its own section changes (params trigger), and the script stays
runnable by hand.

Shared option groups: `add_shard_args` + `select_shard` (per-image steps: manifest, split,
shard), `add_xm_args` + `xm_index` (CONTA context inputs of rounds t > 0),
`add_loader_args` (training steps: DataLoader worker processes) and `loader_options` (the
DataLoader keywords every training loop uses).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.device import claim_device, seed_everything, set_threads
from conta_core.shards import shard_ids

DEFAULT_SPLIT = "train"  # split of the per-image steps when --split is optional


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


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_shard_args(
    parser: argparse.ArgumentParser, *, split_default: str | None = DEFAULT_SPLIT, shard_defaults: bool = False
) -> None:
    """Add --manifest, --split, --shard and --num-shards (the per-image steps' selection).

    split_default: default of --split; None makes --split required. shard_defaults: True
    gives --shard 0 / --num-shards 1 defaults (one shard: the whole split), False makes
    both required.
    """
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest JSON")
    parser.add_argument(
        "--split", default=split_default, required=split_default is None, help="manifest split whose images to do"
    )
    shard_help = "0-based shard index (conta_core.shards.shard_ids checks the range)"
    if shard_defaults:
        parser.add_argument("--shard", type=int, default=0, help=shard_help)
        parser.add_argument("--num-shards", type=int, default=1, help="number of shards")
    else:
        parser.add_argument("--shard", type=int, required=True, help=shard_help)
        parser.add_argument("--num-shards", type=int, required=True, help="number of shards")


def select_shard(args: argparse.Namespace) -> tuple[Manifest, list[str]]:
    """(manifest, the ids of shard --shard of --num-shards of --split) from `add_shard_args` options."""
    manifest = Manifest.load(args.manifest)
    return manifest, shard_ids(manifest.ids(args.split), args.shard, args.num_shards)


def add_xm_args(parser: argparse.ArgumentParser, confounder: bool = False) -> None:
    """Add --xm-dir (repeatable: X_m label PNG folders of the previous round) and, with
    `confounder`, --confounder (the previous round's confounder HDF5)."""
    parser.add_argument("--xm-dir", action="append", default=None, help="X_m folder (repeatable)")
    if confounder:
        parser.add_argument("--confounder", default=None, help="confounder HDF5 of the previous round")


def xm_index(args: argparse.Namespace) -> dict[str, Path] | None:
    """Image id -> X_m PNG over the --xm-dir folders; None when none were given (round 0)."""
    return index_artifacts(args.xm_dir, ".png") if args.xm_dir else None


def add_loader_args(parser: argparse.ArgumentParser) -> None:
    """Add --loader-workers (config key loader_workers): DataLoader worker processes of a training step."""
    parser.add_argument(
        "--loader-workers", type=nonneg_int, default=0,
        help="DataLoader worker processes (config loader_workers; 0 = load in the main process)",
    )  # fmt: skip


def loader_options(num_workers: int, device: torch.device | str, seed: int) -> dict:
    """DataLoader keywords of the training loops: workers, pinned memory on CUDA, seeded generator.

    The generator (seeded with the run seed) drives the shuffling and the workers' base seed.
    No worker_init_fn is needed: the training datasets draw their augmentation from
    np.random.default_rng((seed, epoch, index)) per item (conta_core.data.torch_datasets,
    conta_core.irn.IrnTrainSet), never from a global RNG, so a batch does not depend on the
    number of workers or on which worker loads it.
    """
    if num_workers < 0:
        raise ValueError(f"config key loader_workers: expected an integer >= 0, got {num_workers}")
    return {
        "num_workers": int(num_workers),
        "pin_memory": torch.device(device).type == "cuda",
        "generator": torch.Generator().manual_seed(int(seed)),
    }
