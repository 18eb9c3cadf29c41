"""The benchmark harness (benchmarks/harness.py) runs end to end on a tiny input set.

Only the harness is checked here (rows printed, JSON written, --keep keeps the folder);
speed is measured by the benchmarks themselves, never asserted in a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_confounder_benchmark_runs_and_keeps_its_inputs(tmp_path):
    keep, out = tmp_path / "keep", tmp_path / "r.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_confounder.py"), "--images", "4", "--size", "32",
           "--repeat", "1", "--threads", "1", "--no-trace", "--keep", str(keep), "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| confounder |")]
    assert [r.split("|")[2].strip() for r in rows] == ["naive", "fast"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in records] == ["naive", "fast"]
    assert all(r["images"] == 4 and r["median_s"] > 0 for r in records)
    kept = list(keep.iterdir())
    assert len(kept) == 1 and (kept[0] / "spec.json").is_file()
    assert (kept[0] / "out" / "fast_0" / "timed" / "confounder.h5").is_file()


def test_cam_storage_benchmark_reports_every_format(tmp_path):
    out = tmp_path / "storage.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_cam_storage.py"), "--classes", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    sizes = json.loads(out.read_text())["bytes_per_image"]["1"]
    assert set(sizes) == {"pickled_npy_float32", "npz_float32", "npz_float16_high_res", "npz_compressed_float32"}
    assert abs(sizes["npz_float32"] - 4 * (500 * 375 + 125 * 94)) < 2000  # float32 maps + headers
    assert sizes["npz_float16_high_res"] < 0.6 * sizes["npz_float32"]


def test_gpu_suite_cpu_path_writes_its_tables(tmp_path):
    """benchmarks/gpu_suite.sh on a machine without CUDA (the smoke sizes): it runs, writes the
    JSON lines and the Markdown table, and says that no GPU was measured."""
    env = dict(os.environ, SUITE_SMOKE="1", SUITE_THREADS="1", CUDA_VISIBLE_DEVICES="")
    subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    records = [json.loads(line) for line in (tmp_path / "suite.jsonl").read_text().splitlines()]
    assert records and all(r["device"] == "cpu" and r["autocast"] is False for r in records)
    table = (tmp_path / "suite.md").read_text()
    assert "| make_cam | cpu | 2 | 32 | fp32 |" in table and "not a GPU measurement" in table
    assert "local GPU claim: not measured" in table


def test_workflow_benchmark_counts_jobs_and_finds_nothing_to_redo(tmp_path):
    out = tmp_path / "wf.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_workflow.py"),
        "--shards",
        "2",
        "--rounds",
        "0",
        "--json",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["shards"] == 2 and row["jobs"] > 10 and row["outputs"] >= row["jobs"] - 2  # targets have no output
    assert row["noop_s"] > 0 and result["job_startup_s"] > 0 and result["snakemake_startup_s"] > 0
    assert "scontrol_s" in result  # None without scontrol on PATH
    loads = result["model_load_s"]
    assert loads["classifier_r50_s"] > 0 and loads["deeplab_r101_s"] > 0 and loads["deeplab_r101_model_mib"] > 100


def test_levers_benchmark_compares_each_lever_with_eager(tmp_path):
    out = tmp_path / "levers.jsonl"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_levers.py"),
        "--step",
        "make_cam",
        "--size",
        "48",
        "--images",
        "1",
        "--threads",
        "1",
        "--levers",
        "eager,bn_fold+channels_last,production",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["lever"]: r for r in map(json.loads, out.read_text().splitlines())}
    peak = records.pop("conv_peak")
    assert set(records) == {"eager", "bn_fold+channels_last", "production"}
    assert records["eager"]["max_abs_diff"] == 0.0
    assert all(r["max_abs_diff"] < 1e-4 and r["s_per_image"] > 0 for r in records.values())
    assert peak["gflops"] > 0 and records["eager"]["gflop_per_image"] > 0
    assert all(r["gflops"] > 0 and r["pct_of_conv_peak"] > 0 for r in records.values())


def test_train_seg_levers_benchmark_trains_each_lever_from_the_same_start(tmp_path):
    out = tmp_path / "train_seg.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train_seg.py"), "--overlay", ".test/config.yaml",
           "--iterations", "2", "--warmup", "0", "--repeat", "2", "--images", "4", "--threads", "1",
           "--levers", "eager,bf16"]  # fmt: skip
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["lever"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"eager", "bf16"} and records["eager"]["eager_repeats_identical"]
    assert len(records["bf16"]["s_per_it_repeats"]) == 2
    # the same weights and batch at iteration 0: only the arithmetic differs
    assert 0 < records["bf16"]["first_loss_abs_diff"] < 0.05
    assert 0 < records["bf16"]["weights_rel_distance"] < 1 and records["bf16"]["moved_from_start"] > 0
    assert "| bf16 |" in proc.stdout
    too_few = subprocess.run([*cmd[:-2], "--images", "2"], capture_output=True, text=True, timeout=600)
    assert too_few.returncode != 0 and "--images 2: need at least segmentation.batch_size" in too_few.stderr


def test_reference_benchmark_walk_of_the_project_alone(tmp_path):
    """bench_reference.py without IRNet's code: --walk-project-only grids (the sizes the dense
    reference cannot hold) need only a folder that looks like the checkout."""
    fake = tmp_path / "irn"
    (fake / "step").mkdir(parents=True)
    (fake / "step" / "make_sem_seg_labels.py").write_text("")
    out = tmp_path / "walk.jsonl"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_reference.py"),
        "--irn",
        str(fake),
        "--threads",
        "1",
        "--walk",
        "--walk-project-only",
        "12x16",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["code"] == "project" and rec["nodes"] == 192 and rec["seconds"] > 0 and rec["peak_rss_mib"] > 0
    assert "| 12x16 | 192 | project |" in proc.stdout
    bad = subprocess.run([*cmd[:3], str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not a checkout of jiwoon-ahn/irn" in bad.stderr


SEAM_CHECKOUT = Path("/tmp/ref/seam")  # YudeWang/SEAM at 3212261 (tools/make_seam_goldens.py)


def test_seam_benchmark_refuses_a_folder_that_is_not_the_checkout(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_seam.py"), "--seam", str(tmp_path)]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not a checkout of YudeWang/SEAM" in bad.stderr


@pytest.mark.skipif(not (SEAM_CHECKOUT / "infer_SEAM.py").is_file(), reason="no SEAM checkout at /tmp/ref/seam")
def test_seam_benchmark_times_both_codes_and_reports_agreement(tmp_path):
    """bench_seam.py at a tiny size (64 x 80: infer_aff needs 8 x 10 features, 32 x 40 fails in
    its get_indices_of_pairs): both codes, both steps, the table and the JSON records."""
    out = tmp_path / "seam.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_seam.py"), "--seam", str(SEAM_CHECKOUT),
           "--size", "64x80", "--images", "1", "--repeat", "1", "--threads", "1", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["step"], r["code"]) for r in records] == [
        ("cam", "reference"), ("cam", "project"), ("walk", "reference"), ("walk", "project")
    ]  # fmt: skip
    assert all(r["s_per_image"] > 0 and r["peak_rss_mib"] > 0 and len(r["load_avg_start"]) == 3 for r in records)
    cam, walk = records[1]["agreement_value"], records[3]["agreement_value"]
    assert cam <= 1e-4 and walk >= 99.9  # the parity bounds of tests/test_seam_parity.py
    assert "| CAM (infer_SEAM --out_cam / make_seam_cams) | 64x80 | 1 | 1 |" in proc.stdout
