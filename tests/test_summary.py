"""conta_core.report.summary: per-round table and the paired comparison of two settings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conta_core.report.summary import paired_comparison, summarize


def _write_round(run: Path, t: int, cam: float, pseudo: dict[str, float]) -> None:
    d = run / f"round{t}"
    d.mkdir(parents=True)
    pd.DataFrame({"threshold": [0.4, 0.5], "miou": [cam - 0.1, cam],
                  "is_eval_threshold": [False, True], "is_best": [False, True]}).to_csv(d / "cam_eval.csv", index=False)  # fmt: skip
    rows = [{"stage": "pseudo_mask", "class": c, "iou": v} for c, v in pseudo.items()]
    rows.append({"stage": "pseudo_mask", "class": "mean", "iou": sum(pseudo.values()) / len(pseudo)})
    pd.DataFrame(rows).to_csv(d / "pseudo_mask_eval.csv", index=False)


def test_summarize_reads_cam_and_pseudo(tmp_path):
    _write_round(tmp_path, 0, 0.5, {"background": 0.9, "car": 0.3})
    df = summarize(tmp_path, [0])
    assert df.loc[0, "cam_miou"] == 50.0 and df.loc[0, "cam_best_threshold"] == 0.5
    assert df.loc[0, "pseudo_mask_miou"] == 60.0 and pd.isna(df.loc[0, "seg_val_miou"])


def test_paired_comparison_means_and_paired_differences(tmp_path):
    pairs = {}
    for seed, (a_car, b_car) in enumerate([(0.6, 0.3), (0.5, 0.4)]):
        a, b = tmp_path / f"a{seed}", tmp_path / f"b{seed}"
        _write_round(a, 1, 0.5, {"background": 0.9, "car": a_car})
        _write_round(b, 1, 0.5, {"background": 0.9, "car": b_car})
        pairs[str(seed)] = (a, b)
    runs, summary = paired_comparison(pairs, 1, ["car"], ("conta", "none"))
    assert list(runs["setting"]) == ["conta", "none", "conta", "none"]
    car = summary.set_index("metric").loc["pseudo_car"]
    assert car["n"] == 2 and car["conta_mean"] == pytest.approx(55.0) and car["none_mean"] == pytest.approx(35.0)
    assert car["diff_mean"] == pytest.approx(20.0) and car["diff_min"] == pytest.approx(10.0)
    assert car["diff_max"] == pytest.approx(30.0)
    assert "seg_val_miou" not in set(summary["metric"])  # no run has it


def test_paired_comparison_names_missing_round_and_class(tmp_path):
    _write_round(tmp_path / "a", 1, 0.5, {"background": 0.9, "car": 0.5})
    with pytest.raises(FileNotFoundError, match="round1"):
        paired_comparison({"0": (tmp_path / "a", tmp_path / "b")}, 1, [], ("conta", "none"))
    _write_round(tmp_path / "b", 1, 0.5, {"background": 0.9, "car": 0.5})
    with pytest.raises(ValueError, match="no class 'horse'"):
        paired_comparison({"0": (tmp_path / "a", tmp_path / "b")}, 1, ["horse"])


def test_paired_comparison_of_two_rounds_of_one_run(tmp_path):
    _write_round(tmp_path / "r", 0, 0.4, {"background": 0.9, "car": 0.2})
    _write_round(tmp_path / "r", 1, 0.5, {"background": 0.9, "car": 0.4})
    runs, summary = paired_comparison({"0": (tmp_path / "r", tmp_path / "r")}, 1, ["car"], ("r1", "r0"), t_b=0)
    assert list(runs["round"]) == [1, 0]
    diff = summary.set_index("metric")["diff_mean"]
    assert diff["cam_miou"] == pytest.approx(10.0) and diff["pseudo_car"] == pytest.approx(20.0)
