"""Shared command-line plumbing for the thin scripts in `workflow_scripts/`.

Convention: a rule passes the config sections its step needs as one JSON object
(`--cfg '{params.cfg:q}'` in the rule), plus explicit input/output paths. Snakemake then
reruns a step exactly when its own section changes (params trigger), and the script stays
runnable by hand.

Shared option groups: `add_shard_args` + `select_shard` (per-image steps: manifest, split,
shard), `add_train_args` (training steps: manifest, split, checkpoint and log paths, loader
workers, resumable checkpoints), `add_xm_args` + `xm_index` (CONTA context inputs of rounds
t > 0), `add_loader_args` (DataLoader worker processes; the DataLoader keywords themselves
are conta_core.infra.training.loader_options), `add_method_arg` + `step_function` (the step
rules every seed method runs: the method's step function, conta_core.infra.methods).
Progress logging lives in conta_core.infra.progress.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.infra.device import claim_device, seed_everything, set_threads
from conta_core.infra.methods import METHOD_NAMES, STEP_RULES, method
from conta_core.infra.shards import shard_ids

DEFAULT_SPLIT = "train"  # split of the per-image steps when --split is optional


# --- Snakemake `script:` adapter ----------------------------------------------------------

DAG_ONLY = ("pretrained", "artifacts")  # named rule inputs that only order the DAG (not script options)
RUNTIME_CONFIG = ("checkpoint", "pretrain_cache", "method")
"""Options read from the job's config at run time, not from rule params. checkpoint,
pretrain_cache: changing them reruns nothing. method: which step function a step rule's
script calls; the rule's --cfg object changes with the method wherever the function does
(conta_core.infra.rule_configs), and that reruns it."""


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _flag_argv(action: argparse.Action, value, rule: str) -> list[str]:
    flag = max(action.option_strings, key=len)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return [flag] if value else []
    if value is None:
        return []
    if isinstance(value, dict):
        return [flag, json.dumps(value, sort_keys=True)]
    if isinstance(value, (list, tuple)):
        if isinstance(action, argparse._AppendAction):
            return [x for v in value for x in (flag, str(v))]
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            return [flag, *map(str, value)] if value else []
        if len(value) > 1:
            raise ValueError(f"rule {rule}: {action.dest!r} has {len(value)} values but {flag} takes one")
        return [flag, str(value[0])] if value else []  # an optional input: [] or [path]
    return [flag, str(value)]


def snakemake_argv(parser: argparse.ArgumentParser, smk) -> list[str]:
    """The argv of a workflow script for the job `smk` (Snakemake's `script:` object).

    Convention: a named input, output or param NAME is the option whose dest is NAME (lists
    repeat an `append` option or fill an nargs one; True gives a bare flag, False/None
    nothing; dicts become JSON); a param named like the parser's subcommand dest picks the
    subcommand; wildcards and `threads` fill options of the same dest; RUNTIME_CONFIG
    options come from the config section of that name. A name no parser knows is an error
    (DAG_ONLY inputs excepted), so a rule cannot drop an option silently.
    """
    top, sub_action = _options(parser), _subcommands(parser)
    command = smk.params.get(sub_action.dest) if sub_action is not None else None
    sub = _options(sub_action.choices[command]) if command is not None else {}
    known = {**top, **sub}
    values: dict = {}
    for kind, items in (("input", smk.input), ("output", smk.output), ("params", smk.params)):
        for name, value in items.items():
            if (kind == "input" and name in DAG_ONLY) or (sub_action is not None and name == sub_action.dest):
                continue
            if name not in known:
                raise ValueError(
                    f"rule {smk.rule}: {kind} {name!r} is no option of {parser.prog} "
                    f"(options: {', '.join(sorted(known))})"
                )
            values[name] = value
    for name, value in smk.wildcards.items():
        if name in known and name not in values:
            values[name] = value
    if "threads" in known:
        values.setdefault("threads", smk.threads)
    for key in RUNTIME_CONFIG:
        if key in known and key not in values and key in smk.config:
            values[key] = smk.config[key]
    argv = [x for d, v in values.items() if d in top for x in _flag_argv(top[d], v, smk.rule)]
    if command is not None:
        argv.append(command)
        argv += [x for d, v in values.items() if d not in top for x in _flag_argv(sub[d], v, smk.rule)]
    return argv


def script_main(parser_fn, run_fn, smk=None, argv: list[str] | None = None) -> None:
    """Entry point of every workflow script: `run_fn(parser_fn().parse_args(argv))`.

    smk: Snakemake's `snakemake` object when the script runs through a rule's `script:`;
    its options then come from `snakemake_argv` and stdout/stderr go to the rule's log, so
    the command line and the workflow run the same code path.
    """
    parser = parser_fn()
    if smk is None:
        run_fn(parser.parse_args(argv))
        return
    console = None
    if smk.log:
        fd = os.open(smk.log[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        sys.stdout.flush()
        sys.stderr.flush()
        console = os.dup(2)  # Snakemake's console: the one-line cause of a failure goes there too
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # also where Python's streams were replaced
        sys.stderr = open(2, "w", buffering=1, closefd=False)
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)  # Snakemake sets the real path
    if main_file:
        parser.prog = Path(main_file).name
    args = snakemake_argv(parser, smk)
    print(shlex.join([parser.prog, *args]), file=sys.stderr, flush=True)  # the equivalent command line
    try:
        run_fn(parser.parse_args(args))
    except BaseException as e:
        if console is not None and not (isinstance(e, SystemExit) and e.code in (0, None)):
            os.write(console, f"{failure_line(e, smk.log[0])}\n".encode())
        raise


def failure_line(e: BaseException, log_path: str) -> str:
    """`<log>: <Error>: <first line of the message>`: the cause of a failed job beside its log
    (the traceback stays in the log); Snakemake's console otherwise shows only the log path."""
    text = str(e.code) if isinstance(e, SystemExit) else str(e)
    lines = text.strip().splitlines() or [""]
    first = " ".join(x.strip() for x in lines[:2]) if lines[0].endswith(":") else lines[0]
    return f"{log_path}: {type(e).__name__}: {first}"[:1000]


def script_doc(path: str | os.PathLike) -> str:
    """The module docstring of a workflow script read from its file (under Snakemake's
    `script:` a preamble precedes it, so the module's __doc__ is None)."""
    import ast

    return ast.get_docstring(ast.parse(Path(path).read_text())) or ""


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="JSON object with the config sections this step needs")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads / worker processes")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(args: argparse.Namespace, needs_device: bool = True) -> tuple[dict, torch.device]:
    """Parse --cfg, configure logging, threads and seeds; claim a device (GPU lock)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = json.loads(args.cfg)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--cfg is not valid JSON: {e}")
    set_threads(args.threads)
    seed_everything(args.seed)
    device = claim_device(args.device) if needs_device else torch.device("cpu")
    logging.getLogger("conta").info("device %s, threads %d", device, args.threads)
    return cfg, device


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
    shard_help = "0-based shard index (conta_core.infra.shards.shard_ids checks the range)"
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


def add_train_args(parser: argparse.ArgumentParser, *, log_required: bool = False) -> None:
    """Add the options of a training step: --manifest, --split (default train), --out (the
    checkpoint, model.pth), --log (dest train_log: the per-iteration CSV; optional unless
    log_required), --loader-workers and --checkpoint."""
    parser.add_argument("--manifest", required=True, help="dataset manifest JSON")
    parser.add_argument("--split", default=DEFAULT_SPLIT, help="manifest split whose images train the model")
    parser.add_argument("--out", required=True, help="checkpoint path (model.pth)")
    parser.add_argument("--log", dest="train_log", required=log_required, default=None, help="per-iteration CSV")
    add_loader_args(parser)
    add_checkpoint_args(parser)


def add_method_arg(parser: argparse.ArgumentParser) -> None:
    """Add --method (config key `method`, filled from the job's config under Snakemake): the
    seed method whose step function a step rule's script calls (`step_function`)."""
    parser.add_argument(
        "--method", choices=METHOD_NAMES, default=METHOD_NAMES[0],
        help="seed method (config key method): picks the step function",
    )  # fmt: skip


def step_function(method_name: str, step: str):
    """The conta_core.steps function of step rule `step` (STEP_RULES) for seed method
    `method_name`: its registry entry's "module:function" (conta_core.infra.methods),
    imported here (the registry imports no step module)."""
    if step not in STEP_RULES:
        raise ValueError(f"{step!r} is not a step rule ({', '.join(STEP_RULES)})")
    module, _, name = method(method_name).steps[step].partition(":")
    return getattr(importlib.import_module(module), name)


def add_loader_args(parser: argparse.ArgumentParser) -> None:
    """Add --loader-workers (config key loader_workers): DataLoader worker processes of a training step."""
    parser.add_argument(
        "--loader-workers", type=nonneg_int, default=0,
        help="DataLoader worker processes (config loader_workers; 0 = load in the main process)",
    )  # fmt: skip


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """Add --checkpoint (the `checkpoint` config section as JSON: resumable training, conta_core.infra.training)."""
    parser.add_argument(
        "--checkpoint", type=_json_object, default={},
        help='JSON {"every": steps, "minutes": m, "keep": bool}; a rerun resumes from <out>.resume/',
    )  # fmt: skip


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value
