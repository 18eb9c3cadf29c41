"""End-to-end: a folder dataset of tagged images without GT masks runs every round to the end
(the use case WSSS exists for). No evaluation job is planned; the rounds produce pseudo-masks,
the segmentation model and predictions and the confounder set; the summary says "no ground truth"."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_snakemake, write_config

pytestmark = pytest.mark.e2e
RUN = Path("results/tags")
EVAL_RULES = ("eval_cam", "eval_pseudo", "eval_seg", "figure_miou", "figure_cam_sweep", "table_per_class_iou")


def _folder_dataset(root: Path) -> tuple[Path, list[str]]:
    """The tiny generated images as a folder dataset: images + tags.csv (image_id, labels, split), no masks."""
    import yaml
    from conftest import REPO, TINY_OVERRIDES

    from conta_core.data.synthetic import generate_synthetic

    synth = yaml.safe_load((REPO / "config/config.yaml").read_text())["dataset"]["synthetic"]
    src = generate_synthetic(root / "src", {**synth, **TINY_OVERRIDES["dataset"]["synthetic"]})
    images = root / "images"
    images.mkdir()
    rows = ["image_id,labels,split"]
    for split in ("train", "val"):
        for i in src.ids(split):
            shutil.copy(src.image_file(i), images / f"{i}{src.image_file(i).suffix}")
            rows.append(f"{i},{' '.join(src.class_names[k] for k in src.labels[i])},{split}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    shutil.rmtree(root / "src")  # no mask can be found anywhere
    return images, list(src.class_names)


def test_folder_without_masks_runs_round1_to_the_end(tmp_path):
    images, names = _folder_dataset(tmp_path / "data")
    extra = {
        "rounds": 1,
        "dataset": {
            "kind": "folder",
            "root": str(images),
            "csv": str(tmp_path / "data/tags.csv"),
            "masks_dir": None,
            "class_names": names,
        },
        "pretrain": {"enabled": False},
    }
    cfg = write_config(tmp_path / "tags.yaml", Path("results"), run="tags", extra=extra)
    plan = run_snakemake(tmp_path, cfg, "-n", "round1").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan, flags=re.M))
    assert not [r for r in EVAL_RULES if r in counts], counts  # decided in the DAG: nothing to score
    assert counts["train_seg"] == "2" and counts["confounder"] == "1"

    run_snakemake(tmp_path, cfg, "round1")
    run = tmp_path / RUN
    n_train = 16
    for t in (0, 1):
        rd = run / f"round{t}"
        assert len(list(rd.glob("pseudo_mask/*/*.png"))) == n_train
        assert (rd / "seg/model.pth").exists()
        assert len(list(rd.glob("seg_pred/train/*/*.png"))) == n_train
        assert not list(rd.glob("*eval*.csv"))
    assert (run / "round0/confounder.h5").exists()
    summary = pd.read_csv(run / "round1/summary.csv")
    assert summary["round"].tolist() == [0, 1]
    assert (summary["ground_truth"] == "none: not evaluated").all()
    assert summary["pseudo_masks"].tolist() == [n_train] * 2 and summary["confounder"].tolist() == [True, False]
    assert "ctx_inert" in summary.columns  # round 1's context diagnostics need no GT
    assert (run / "round1/figures/train_loss.png").exists() and list((run / "round1/figures/samples").glob("*.png"))
    assert run_snakemake(tmp_path, cfg, "-n", "round1").stdout.count("rule ") == 0  # finished: nothing to do
