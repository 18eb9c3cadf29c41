"""conta_core.report.cost and `conta cost`: job-seconds per rule from a run's benchmark files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conta_core import cli
from conta_core.report.cost import cost_table, read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path: Path, s: float, rss: float, cpu: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{s}\t0:00:{int(s):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def make_run(root: Path) -> Path:
    run = root / "run"
    b = run / "benchmarks"
    _bench(b / "prepare_data.tsv", 4.0, 100, 3.0)
    _bench(b / "train_seg" / "round0.tsv", 30.0, 900, 55.0)
    _bench(b / "train_seg" / "round1.tsv", 40.0, 1000, 70.0)
    _bench(b / "make_cam" / "round1_0.tsv", 6.0, 800, 5.0)
    _bench(b / "make_cam" / "round1_1.tsv", 4.0, 850, 3.0)
    _bench(b / "confounding" / "round1_seg_val.tsv", 10.0, 700, 9.0)
    repeated = b / "eval_cam" / "round1.tsv"  # Snakemake's repeat(..., 2): one row per repetition
    _bench(repeated, 2.0, 600, 1.0)
    repeated.write_text(repeated.read_text() + "4.0\t0:00:04\t650\t1\t1\t1\t0\t0\t50\t3.0\n")
    return run


def test_per_rule_sums_of_one_round_costliest_first(tmp_path):
    jobs = read_benchmarks(make_run(tmp_path))
    assert len(jobs) == 7 and pd.isna(jobs.set_index("rule").loc["prepare_data", "round"])
    t = cost_table(jobs, 1).set_index("rule")
    assert list(t.index) == ["train_seg", "confounding", "make_cam", "eval_cam"]
    assert t.loc["eval_cam", ["jobs", "seconds", "cpu_seconds", "peak_rss_mib"]].tolist() == [1, 3.0, 2.0, 650]
    assert t.loc["make_cam", "jobs"] == 2 and t.loc["make_cam", "seconds"] == 10.0
    assert t.loc["make_cam", "peak_rss_mib"] == 850 and t.loc["make_cam", "cpu_seconds"] == 8.0
    assert t.loc["train_seg", "share"] == pytest.approx(40 / 63)
    assert cost_table(jobs)["seconds"].sum() == 97.0  # every job, round-less ones included
    assert cost_table(jobs, 7).empty


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    run = make_run(tmp_path)
    (run / "benchmarks" / "eval_cam" / "round0.tsv").write_text("garbage\n")
    with pytest.raises(ValueError, match=r"eval_cam/round0.tsv: not a Snakemake benchmark file"):
        read_benchmarks(run)


def test_conta_cost_prints_the_table(tmp_path, capsys):
    run = make_run(tmp_path)
    assert cli.main(["cost", str(run), "--round", "1"]) == 0
    out = capsys.readouterr().out
    assert "round 1: 5 jobs, 63.0 job-seconds" in out and "| train_seg | 1 | 40.0 | 63.5 % | 70.0 | 1000 |" in out
    assert "base run" not in out
    assert cli.main(["cost", str(tmp_path / "nothing")]) == 2
    (run / "benchmarks" / "prepare_data.tsv").unlink()  # a study run: data and round 0 are its base's
    assert cli.main(["cost", str(run), "--round", "0"]) == 0
    assert "the data, pre-training and round 0 are the base run's" in capsys.readouterr().out
