"""conta_core.runtime: the shared shard selection and DataLoader options of the workflow scripts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from conta_core.data.manifest import Manifest
from conta_core.runtime import add_loader_args, add_shard_args, add_xm_args, loader_options, select_shard, xm_index
from conta_core.shards import shard_ids

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
