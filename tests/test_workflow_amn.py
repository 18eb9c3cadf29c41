"""End-to-end: the real workflow with method amn (AMN seeds, CONTA on AMN) on tiny data (e2e)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dry_run_jobs, run_snakemake, write_config

pytestmark = pytest.mark.e2e
RUN = Path("results/tiny")
TINY_AMN = {"method": "amn", "rounds": 1, "amn": {"epochs": 1, "batch_size": 8, "crop_size": 48, "aspp_rates": [2, 4]}}


def _counts(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)\s+(\d+)$", stdout, flags=re.M))


def test_dry_run_routes_irnet_and_walk_through_amn(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", Path("results"), extra=TINY_AMN)
    out = run_snakemake(tmp_path, cfg, "-n", "round1").stdout
    counts = _counts(out)
    assert counts["train_amn"] == "2" and counts["make_amn_cam"] == "4" and counts["eval_amn_cam"] == "2"
    assert counts["make_amn_ir_label"] == "4" and counts["make_ir_label"] == "4"  # first-stage seeds still made
    jobs = dry_run_jobs(out)
    walk = [j for j in jobs if j["rule"] == "random_walk"]
    assert walk and all(
        re.search(r"/amn_cam/(\d+)", j["input"]).group(1) == j["output"].rsplit("/", 1)[1]
        and not re.search(r"/round\d+/cam/", j["input"])
        for j in walk
    )  # its own shard
    irn = [j["input"] for j in jobs if j["rule"] == "train_irn"]
    assert irn and all("/amn_ir_label/1" in i and not re.search(r"/round\d+/ir_label/", i) for i in irn)
    amn_r1 = [j["input"] for j in jobs if j["rule"] == "train_amn" and "t=1" in j["wildcards"]]
    assert amn_r1 and "round0/confounder.h5" in amn_r1[0] and "round0/seg_pred/train/0" in amn_r1[0]


def test_dry_run_irn_has_no_amn_jobs(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", Path("results"), extra={"rounds": 1})
    out = run_snakemake(tmp_path, cfg, "-n", "round1").stdout
    assert "amn" not in " ".join(_counts(out))
    assert "amn_cam" not in out


def test_amn_round1_artifacts_and_summary(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", Path("results"), extra=TINY_AMN)
    run_snakemake(tmp_path, cfg, "round1")
    check_amn_run(tmp_path / RUN)


def check_amn_run(run: Path) -> None:
    """Assertions on a finished tiny `method: amn` round1 run folder."""
    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import load_cam, load_torch

    m = Manifest.load(run / "data/manifest.json")
    n_train = len(m.ids("train"))
    for t in (0, 1):
        rd = run / f"round{t}"
        for what, suffix in (("amn_cam", "npz"), ("amn_ir_label", "png"), ("pseudo_mask", "png")):
            assert len(list(rd.glob(f"{what}/[01]/*.{suffix}"))) == n_train, (t, what)
        cams = sorted((rd / "amn_cam/0").glob("*.npz"))
        d = load_cam(cams[0])
        image_id = cams[0].stem
        assert d["keys"].tolist() == [k - 1 for k in m.labels[image_id]]
        assert d["high_res"].shape[0] == len(d["keys"]) and d["cam"].shape[0] == len(d["keys"])
        cam_eval, amn_eval = pd.read_csv(rd / "cam_eval.csv"), pd.read_csv(rd / "amn_cam_eval.csv")
        assert list(amn_eval.columns) == list(cam_eval.columns)
        assert np.isclose(amn_eval.loc[amn_eval["is_eval_threshold"], "threshold"], 0.25).all()
        ckpt = load_torch(rd / "amn/model.pth")
        assert (ckpt["config"]["context"] is not None) == (t == 1)  # CONTA on AMN from round 1
        assert (rd / "amn/train_log.csv").exists()
        walk_log = (run / f"logs/random_walk/round{t}_0.log").read_text()  # first line: the equivalent command
        assert walk_log.startswith("random_walk.py ") and '"cam_power": 1.3' in walk_log.splitlines()[0]
    summary = pd.read_csv(run / "round1/summary.csv")
    assert list(summary["round"]) == [0, 1]
    for col in ("amn_cam_miou", "amn_cam_best_miou", "pseudo_mask_miou", "seg_val_miou"):
        assert summary[col].between(0, 100).all(), col
