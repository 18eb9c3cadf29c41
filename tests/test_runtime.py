"""conta_core.script: the shared shard selection and DataLoader options of the workflow scripts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from conta_core.data.manifest import Manifest
from conta_core.infra.shards import shard_ids
from conta_core.infra.training import loader_options
from conta_core.script import add_loader_args, add_shard_args, add_xm_args, select_shard, xm_index

IDS = ["e", "a", "d", "b", "c"]


def _manifest(tmp_path: Path) -> Path:
    images = {i: f"{i}.png" for i in IDS}
    m = Manifest("toy", tmp_path, ["background", "x"], {"train": IDS, "val": IDS[:2]}, {i: [1] for i in IDS}, images)
    m.save(tmp_path / "manifest.json")
    return tmp_path / "manifest.json"


def _parser(**kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_shard_args(p, **kwargs)
    return p


def test_select_shard_matches_shard_ids(tmp_path):
    path = _manifest(tmp_path)
    args = _parser().parse_args(["--manifest", str(path), "--shard", "1", "--num-shards", "2"])
    assert args.split == "train" and args.manifest == path
    manifest, ids = select_shard(args)
    assert manifest.name == "toy" and ids == shard_ids(IDS, 1, 2) == ["b", "d"]
    args = _parser().parse_args(["--manifest", str(path), "--split", "val", "--shard", "0", "--num-shards", "1"])
    assert select_shard(args)[1] == ["a", "e"]


def test_shard_defaults_and_required_options(tmp_path):
    path = str(_manifest(tmp_path))
    args = _parser(shard_defaults=True).parse_args(["--manifest", path])
    assert (args.split, args.shard, args.num_shards) == ("train", 0, 1)
    assert select_shard(args)[1] == sorted(IDS)
    with pytest.raises(SystemExit):  # shard options required by default
        _parser().parse_args(["--manifest", path])
    with pytest.raises(SystemExit):  # split_default=None: --split required
        _parser(split_default=None).parse_args(["--manifest", path, "--shard", "0", "--num-shards", "1"])


def test_select_shard_errors_name_the_problem(tmp_path):
    path = str(_manifest(tmp_path))
    with pytest.raises(ValueError, match="out of range"):
        select_shard(_parser().parse_args(["--manifest", path, "--shard", "2", "--num-shards", "2"]))
    with pytest.raises(KeyError, match="no split 'test'"):
        select_shard(_parser().parse_args(["--manifest", path, "--split", "test", "--shard", "0", "--num-shards", "1"]))


def test_loader_args_and_options():
    p = argparse.ArgumentParser()
    add_loader_args(p)
    assert p.parse_args([]).loader_workers == 0
    assert p.parse_args(["--loader-workers", "3"]).loader_workers == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--loader-workers", "-1"])
    opts = loader_options(2, "cpu", seed=7)
    assert opts["num_workers"] == 2 and opts["pin_memory"] is False
    assert opts["generator"].initial_seed() == 7
    assert loader_options(0, torch.device("cuda", 0), seed=0)["pin_memory"] is True
    with pytest.raises(ValueError, match="loader_workers"):
        loader_options(-1, "cpu", seed=0)


def test_xm_args_and_index(tmp_path):
    for shard, image_id in (("0", "a"), ("1", "b")):
        (tmp_path / shard).mkdir()
        (tmp_path / shard / f"{image_id}.png").write_bytes(b"png")
    p = argparse.ArgumentParser()
    add_xm_args(p, confounder=True)
    round0 = p.parse_args([])
    assert xm_index(round0) is None and round0.confounder is None
    args = p.parse_args(["--xm-dir", str(tmp_path / "0"), "--xm-dir", str(tmp_path / "1"), "--confounder", "c.h5"])
    assert dict(xm_index(args)) == {"a": tmp_path / "0" / "a.png", "b": tmp_path / "1" / "b.png"}
    assert args.confounder == "c.h5"


# --- the Snakemake `script:` adapter ------------------------------------------------------------------


def _named(cls, items: dict):
    """A Snakemake file list as a rule builds it: flat, a list-valued name covering a range."""
    flat, spans = [], []
    for name, value in items.items():
        values = value if isinstance(value, list) else [value]
        spans.append((name, len(flat), len(flat) + len(values), isinstance(value, list)))
        flat += values
    out = cls(flat)
    for name, start, end, is_list in spans:
        out._set_name(name, start, end=end if is_list else None)
    return out


def _job(input_=None, output=None, params=None, wildcards=None, threads=2, config=None, log=None):
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Wildcards
    from snakemake.script import Snakemake

    return Snakemake(
        _named(InputFiles, input_ or {}),
        _named(OutputFiles, output or {}),
        Params(fromdict=params or {}),
        Wildcards(fromdict=wildcards or {}),
        threads,
        ResourceList(),
        Log(log or []),
        config or {},
        "train_x",
        None,
    )


def _job_parser():
    from conta_core.script import add_checkpoint_args, add_method_arg, add_xm_args, base_parser

    p = base_parser("a training step")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--log", dest="train_log")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--rounds", type=int, nargs="+")
    add_xm_args(p, confounder=True)
    add_checkpoint_args(p)
    add_method_arg(p)
    return p


def test_snakemake_argv_maps_rule_names_to_the_options():
    from conta_core.script import snakemake_argv

    smk = _job(
        input_={"pretrained": ["w.pth"], "manifest": "m.json", "xm_dir": ["a/0", "a/1"], "confounder": []},
        output={"train_log": "log.csv"},
        params={"cfg": '{"x": 1}', "flag": True, "rounds": [0, 1]},
        wildcards={"t": "1", "shard": "3", "split": "val"},
        config={"checkpoint": {"every": 5}, "method": "seam"},
    )
    argv = snakemake_argv(_job_parser(), smk)
    args = _job_parser().parse_args(argv)
    assert args.manifest == "m.json" and args.xm_dir == ["a/0", "a/1"] and args.confounder is None
    assert args.train_log == "log.csv" and args.flag and args.rounds == [0, 1] and args.cfg == '{"x": 1}'
    assert args.shard == 3 and args.split == "val" and args.threads == 2  # wildcards and threads fill options
    assert args.checkpoint == {"every": 5} and args.method == "seam"  # from the config at run time, not params
    assert "--pretrained" not in argv  # a DAG-only input


def test_snakemake_argv_refuses_a_name_the_script_does_not_know():
    from conta_core.script import snakemake_argv

    with pytest.raises(ValueError, match="rule train_x: params 'sead' is no option of"):
        snakemake_argv(_job_parser(), _job(input_={"manifest": "m.json"}, params={"cfg": "{}", "sead": 3}))
    with pytest.raises(ValueError, match="'confounder' has 2 values"):
        snakemake_argv(
            _job_parser(), _job(input_={"manifest": "m.json", "confounder": ["a", "b"]}, params={"cfg": "{}"})
        )


def test_script_main_runs_the_same_code_path_and_logs_the_command(tmp_path):
    import os

    from conta_core.script import script_main

    seen = []
    log = tmp_path / "job.log"
    pid = os.fork()  # script_main redirects the process's stdout/stderr to the job log
    if pid == 0:
        code = 1
        try:
            script_main(
                _job_parser,
                lambda a: print("ran", a.manifest, a.xm_dir),
                _job(input_={"manifest": "m.json", "xm_dir": ["x"]}, params={"cfg": "{}"}, log=[str(log)]),
            )
            code = 0
        except BaseException:  # noqa: BLE001 - report in the log, never return into pytest
            import traceback

            traceback.print_exc()
        finally:
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    lines = log.read_text().splitlines() if log.exists() else []
    assert os.WEXITSTATUS(status) == 0, lines
    assert "--manifest m.json" in lines[0] and "--xm-dir x" in lines[0] and "--cfg '{}'" in lines[0]
    assert lines[-1] == "ran m.json ['x']"
    script_main(_job_parser, seen.append, argv=["--cfg", "{}", "--manifest", "n.json"])  # the command line
    assert seen[0].manifest == "n.json"
