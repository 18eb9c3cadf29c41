"""End-to-end: the real workflow with method seam (SEAM + AffinityNet, CONTA on SEAM) on tiny data (e2e)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake, write_config

pytestmark = pytest.mark.e2e
RUN = Path("results/tiny")
TINY_SEAM = {
    "method": "seam",
    "rounds": 1,
    "seam": {
        "width": 0.0625,
        "epochs": 1,
        "crop_size": 48,
        "cam_scales": [1.0],
        "aff": {"epochs": 1, "crop_size": 48},
        "walk": {"logt": 2},
    },
}


def _counts(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)\s+(\d+)$", stdout, flags=re.M))


def test_seam_round1_artifacts_and_summary(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", Path("results"), extra=TINY_SEAM)
    counts = _counts(run_snakemake(tmp_path, cfg, "-n", "round1").stdout)
    # the step rules every method runs, with SEAM's step functions; train_aff instead of IRNet
    assert counts["train_cls"] == "2" and counts["train_aff"] == "2" and counts["random_walk"] == "4"
    assert counts["make_cam"] == counts["make_ir_label"] == "4" and "train_irn" not in counts
    assert counts["pretrain"] == "2"  # the classifier's / DeepLab's ResNet and SEAM's ResNet-38
    run_snakemake(tmp_path, cfg, "round1")
    check_seam_run(tmp_path / RUN)
    command = (tmp_path / RUN / "logs/train_cls/round0.log").read_text().splitlines()[0]
    assert f'"pretrained": "{RUN}/pretrain/resnet38_w0.0625.pth"' in command  # SEAM starts from it
    for step in ("train_cls/round0", "make_cam/round0_0", "make_ir_label/round1_1", "random_walk/round1_0"):
        first = (tmp_path / RUN / f"logs/{step}.log").read_text().splitlines()[0]  # the equivalent command
        assert "--method seam" in first, first


def check_seam_run(run: Path) -> None:
    """Assertions on a finished tiny `method: seam` round1 run folder."""
    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import load_cam, load_torch

    m = Manifest.load(run / "data/manifest.json")
    n_train = len(m.ids("train"))
    for t in (0, 1):
        rd = run / f"round{t}"
        for what, suffix in (("cam", "npz"), ("ir_label", "npz"), ("ir_label", "png"), ("pseudo_mask", "png")):
            assert len(list(rd.glob(f"{what}/[01]/*.{suffix}"))) == n_train, (t, what, suffix)
        cam = load_cam(sorted((rd / "cam/0").glob("*.npz"))[0])
        assert cam["high_res"].shape[0] == len(cam["keys"]) and cam["high_res"].max() <= 1.0
        ckpt = load_torch(rd / "cls/model.pth")
        assert ckpt["kind"] == "seam" and (ckpt["config"]["context"] is not None) == (t == 1)
        assert {"fc8.weight", "f8_3.weight", "f9.weight", "b7.conv_branch1.weight"} <= set(ckpt["state_dict"])
        assert load_torch(rd / "aff/model.pth")["kind"] == "affinity"
        assert {"loss_cls", "loss_er", "loss_ecr"} <= set(pd.read_csv(rd / "cls/train_log.csv").columns)
    assert (run / "round1/context_diagnostics.json").is_file()
    summary = pd.read_csv(run / "round1/summary.csv")
    assert list(summary["round"]) == [0, 1]
    for col in ("cam_miou", "pseudo_mask_miou", "seg_val_miou"):
        assert summary[col].between(0, 100).all() and np.isfinite(summary[col]).all(), col
