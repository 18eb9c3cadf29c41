"""`conta inspect` table on fake run folders: counts per shard, missing shards, evals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from test_visualize import make_manifest, write_cam  # tests/ is on sys.path (pytest rootdir insertion)

from conta_core.infra.fileio import save_label_png, save_torch
from conta_core.infra.shards import shard_ids
from conta_core.report import inspection as inspect


def _by_artifact(df: pd.DataFrame, t: int) -> pd.DataFrame:
    return df[df["round"] == t].set_index("artifact")


def make_run(root: Path) -> Path:
    """round0: CAMs of both shards (one file missing), IR labels of shard 0 only, evals;
    round1: nothing but a classifier checkpoint. Manifest: 5 train, 2 val images."""
    run = root / "run"
    m = make_manifest(run)
    train = m.ids("train")
    rd = run / "round0"
    for s in range(2):
        for image_id in shard_ids(train, s, 2):
            write_cam(rd / "cam" / str(s) / f"{image_id}.npz", m.labels[image_id])
            if s == 0:
                save_label_png(rd / "ir_label" / "0" / f"{image_id}.png", np.zeros((4, 4), np.uint8))
    (rd / "cam" / "1" / f"{shard_ids(train, 1, 2)[0]}.npz").unlink()
    (rd / "cam" / "1" / ".x.tmp.npz").write_bytes(b"")  # a temporary file is not counted
    for s in range(2):
        for image_id in shard_ids(m.ids("val"), s, 2):
            save_label_png(rd / "seg_pred" / "val" / str(s) / f"{image_id}.png", np.zeros((4, 4), np.uint8))
    save_torch(rd / "cls" / "model.pth", {"state_dict": {}, "config": {}})
    save_torch(run / "round1" / "cls" / "model.pth", {"state_dict": {}, "config": {}})
    pd.DataFrame(
        {
            "threshold": [0.1, 0.15, 0.2],
            "miou": [0.30, 0.35, 0.40],
            "background": [0.5, 0.6, 0.7],
            "is_eval_threshold": [False, True, False],
            "is_best": [False, False, True],
        }
    ).to_csv(rd / "cam_eval.csv", index=False)
    seg_val = pd.DataFrame(
        {
            "stage": "seg_val",
            "class": ["background", "mean"],
            "iou": [0.9, 0.525],
            "precision": 1.0,
            "recall": 1.0,
            "gt_pixels": 1,
            "pred_pixels": 1,
        }
    )
    seg_val.to_csv(rd / "seg_eval_val.csv", index=False)
    (rd / "pseudo_mask_eval.csv").write_text("stage,class,iou\npseudo_mask,background,0.5\n")  # no mean row
    with h5py.File(rd / "confounder.h5", "w") as f:
        f.create_dataset("C", data=np.zeros((3, 4, 4), np.float32))
        f.attrs["classes"] = np.array(["cat", "dog", "car"], dtype=h5py.string_dtype())
        f.attrs["round"] = 0
        f.attrs["source"] = "seg"
        f.attrs["image_counts"] = np.ones(3, np.int64)
    return run


def test_rounds_and_shards_are_discovered(tmp_path):
    run = make_run(tmp_path)
    (run / "round10").mkdir()
    (run / "roundx").mkdir()
    assert inspect.find_rounds(run) == [0, 1, 10]
    assert inspect.infer_num_shards(run, [0, 1]) == 2
    assert inspect.find_rounds(tmp_path / "absent") == []


def test_counts_and_missing_shards(tmp_path):
    run = make_run(tmp_path)
    df = inspect.inspect_run(run)
    r0 = _by_artifact(df, 0)
    # 5 train ids in 2 strided shards: 3 + 2; one CAM of shard 1 deleted
    assert (r0.loc["cam", "status"], r0.loc["cam", "found"], r0.loc["cam", "expected"]) == ("partial", 4, 5)
    assert "0:3/3" in r0.loc["cam", "detail"] and "1:1/2" in r0.loc["cam", "detail"]
    assert "missing shards" not in r0.loc["cam", "detail"]
    assert r0.loc["ir_label", "found"] == 3 and r0.loc["ir_label", "status"] == "partial"
    assert "missing shards 1" in r0.loc["ir_label", "detail"]
    assert r0.loc["pseudo_mask", "status"] == "missing"
    assert (r0.loc["seg_pred/val", "status"], r0.loc["seg_pred/val", "found"]) == ("ok", 2)
    assert r0.loc["cls/model.pth", "status"] == "ok" and r0.loc["irn/model.pth", "status"] == "missing"
    assert r0.loc["confounder.h5", "status"] == "ok" and "n=3" in r0.loc["confounder.h5", "detail"]
    r1 = _by_artifact(df, 1)
    assert r1.loc["cam", "status"] == "missing" and r1.loc["cls/model.pth", "status"] == "ok"


def test_more_shards_than_folders(tmp_path):
    run = make_run(tmp_path)
    r0 = _by_artifact(inspect.inspect_run(run, num_shards=3), 0)
    # re-sharded expectation: CAM files now sit in the wrong shard folders, shard 2 is missing
    assert "missing shards 2" in r0.loc["cam", "detail"]
    assert r0.loc["cam", "status"] == "partial"


def test_eval_mious_and_errors(tmp_path):
    run = make_run(tmp_path)
    r0 = _by_artifact(inspect.inspect_run(run), 0)
    assert r0.loc["cam_eval.csv", "detail"] == "mIoU 35.00% at the eval threshold, best 40.00% at 0.2"
    assert r0.loc["seg_eval_val.csv", "detail"] == "mIoU 52.50%"
    assert r0.loc["pseudo_mask_eval.csv", "status"] == "error"
    assert "mean" in r0.loc["pseudo_mask_eval.csv", "detail"]
    assert r0.loc["seg_eval_train.csv", "status"] == "missing"


def test_format_inspection_text(tmp_path):
    run = make_run(tmp_path)
    text = inspect.format_inspection(run, inspect.inspect_run(run))
    assert "manifest fake: 3 foreground classes" in text
    assert "shards: 2" in text and "seg_pred/train" in text and "52.50%" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no round folders" in inspect.format_inspection(empty, inspect.inspect_run(empty))


def test_interrupted_training_shows_its_resume_step(tmp_path):
    run = make_run(tmp_path)
    for step in (4, 6):
        save_torch(run / "round0" / "seg" / "model.pth.resume" / f"step_{step:08d}.pth", {"kind": "resume"})
    r0 = _by_artifact(inspect.inspect_run(run), 0)
    assert r0.loc["seg/model.pth", "status"] == "partial"
    assert r0.loc["seg/model.pth", "detail"] == "interrupted; a rerun resumes at step 6"
    assert r0.loc["irn/model.pth", "status"] == "missing"


def test_amn_stages_and_pretrain_are_covered(tmp_path):
    run = make_run(tmp_path)
    df = inspect.inspect_run(run)
    assert "amn_cam" not in set(df["artifact"]) and "amn_cam_eval.csv" not in set(df["artifact"])  # an irn run
    save_torch(run / "round0" / "amn" / "model.pth", {"state_dict": {}})
    save_torch(run / "pretrain" / "resnet18.pth", {})
    df = inspect.inspect_run(run)
    r0 = _by_artifact(df, 0)
    assert r0.loc["amn/model.pth", "status"] == "ok" and r0.loc["amn_cam", "status"] == "missing"
    assert {"amn_ir_label", "amn_cam_eval.csv"} <= set(r0.index)
    assert "pretrain: resnet18.pth" in inspect.format_inspection(run, df)


def test_a_seam_run_lists_affinitynet_and_no_irn(tmp_path):
    run = make_run(tmp_path)
    save_torch(run / "round0" / "aff" / "model.pth", {"state_dict": {}})
    r0 = _by_artifact(inspect.inspect_run(run), 0)
    assert r0.loc["aff/model.pth", "status"] == "ok" and "irn/model.pth" not in r0.index


def test_context_row_names_the_mode_and_an_inject_other_than_m(tmp_path):
    from conta_core.infra.fileio import write_json

    d = {"mode": "conta", "alpha_entropy_mean": 0.9, "m_cv": 0.19, "cam_change": 0.02, "inert": False}
    write_json(tmp_path / "m" / inspect.DIAGNOSTICS_FILE, d)
    write_json(tmp_path / "xm" / inspect.DIAGNOSTICS_FILE, {**d, "mode": "placebo", "inject": "xm"})
    (m,) = inspect.inspect_context(tmp_path / "m", 1)
    (xm,) = inspect.inspect_context(tmp_path / "xm", 1)
    assert m["detail"].startswith("conta: alpha entropy 0.9000") and "inject" not in m["detail"]
    assert xm["detail"].startswith("placebo (inject xm: X_m in M's place): alpha entropy")
    assert inspect.inspect_context(tmp_path / "none", 1) == []
