"""What a user sees in Snakemake's console when a job or the config is wrong: the one-line
cause of a failed job beside its log path, and the project's own `config key ...` message
for a schema error (real Snakemake runs on a two-image folder dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import run_snakemake, write_config
from PIL import Image


def _dataset(root: Path) -> dict:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{name}.jpg", quality=90)
    data = (root / "b.jpg").read_bytes()
    (root / "b.jpg").write_bytes(data[: len(data) // 2])  # truncated: the header still opens
    (root.parent / "tags.csv").write_text("image_id,labels,split\na,cat,train\nb,dog,val\n")
    return {"kind": "folder", "root": str(root), "csv": str(root.parent / "tags.csv"), "masks_dir": None,
            "class_names": ["background", "cat", "dog"]}  # fmt: skip


def test_failed_job_prints_its_cause_beside_the_log(tmp_path):
    extra = {"dataset": _dataset(tmp_path / "imgs"), "pretrain": {"enabled": False}}
    cfg = write_config(tmp_path / "c.yaml", Path("results"), run="bad", extra=extra)
    proc = run_snakemake(tmp_path, cfg, "prepare_data", check=False, timeout=300)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    line = next(x for x in console.splitlines() if "ValueError" in x)
    assert "logs/prepare_data" in line and "image id 'b'" in line and "b.jpg" in line, console[-3000:]


def test_schema_error_uses_the_projects_message(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", Path("results"), extra={"classifier": {"batch_size": "four"}})
    proc = run_snakemake(tmp_path, cfg, "-n", "round0", check=False, timeout=300)
    assert proc.returncode != 0
    assert "config key classifier.batch_size: 'four' is not of type 'integer'" in proc.stdout + proc.stderr, (
        proc.stdout[-3000:]
    )
