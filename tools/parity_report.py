#!/usr/bin/env python
"""Print the agreement of each step with the reference code, under both sets of conventions.

    python tools/parity_report.py [--golden tests/golden/reference_parity.npz]
    python tools/parity_report.py --seam [--golden tests/golden/seam_parity.npz]

Runs the project's functions on the fixtures of tests/parity_fixtures.py and compares them
with the reference outputs in the golden file (made by tools/make_parity_goldens.py), once
with the reference conventions (the VOC/COCO overlays) and once with the alternative value
of each key (cam.resize bilinear, random_walk.pad_size null, segmentation.input_norm
imagenet), to show what each convention is worth. tests/test_parity.py asserts the
reference column; this prints both as the Markdown table of docs/fidelity.md. CPU, ~30 s.
--seam prints the measured agreement with SEAM (tests/test_seam_parity.py's measures on the
goldens of tools/make_seam_goldens.py), the "SEAM and AffinityNet" table. CPU, ~30 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import parity_fixtures as fx  # noqa: E402
from test_parity import (  # noqa: E402
    CAM_SCALES,
    CPU,
    IDS,
    RW_CFG,
    _amn_net,
    _cam_net,
    _edge_net,
    _golden_cam,
)


def cam_diff(g, resize: str) -> float:
    from conta_core.steps.cam import compute_cams_batch

    net, worst = _cam_net(), 0.0
    for name, img, keys in zip(IDS, fx.fixture_images(), fx.fixture_keys()):
        ((cam, high),) = compute_cams_batch(net, [img], [keys], CAM_SCALES, True, CPU, resize=resize)
        worst = max(worst, np.abs(cam - g[f"irn/cam/{name}"]).max(), np.abs(high - g[f"irn/high_res/{name}"]).max())
    return float(worst)


def ir_agreement(g) -> float:
    from conta_core.infra.config import DEFAULT_CONFIG, load_yaml
    from conta_core.steps.ir_label import cam_to_ir_label

    crf = load_yaml(DEFAULT_CONFIG)["ir_label"]["crf"]
    same = total = 0
    for name, img in zip(IDS, fx.fixture_images()):
        c = _golden_cam(g, name)
        lab = cam_to_ir_label(img, c["keys"], c["high_res"], 0.30, 0.05, crf)
        same, total = same + int((lab == g[f"irn/ir_label/{name}"]).sum()), total + lab.size
    return 100.0 * same / total


def rw_agreement(g, pad_size) -> tuple[float, float]:
    from conta_core.steps.random_walk import boundary_map, pseudo_mask_from_cam

    net, cfg = _edge_net(), {**RW_CFG, "pad_size": pad_size}
    same = total = 0
    worst = 0.0
    for name, img in zip(IDS, fx.fixture_images()):
        b = boundary_map(net, img, CPU, pad_size)
        worst = max(worst, float(np.abs(b - g[f"irn/edge/{name}"]).max()))
        c = _golden_cam(g, name)
        if c["cam"].max() == 0:  # IRNet's 0/0 (tests/test_parity.py)
            continue
        m = pseudo_mask_from_cam(img, c, net, cfg, CPU, b)
        same, total = same + int((m == g[f"irn/sem_seg/{name}"]).sum()), total + m.size
    return worst, 100.0 * same / total


def deeplab_diff(g, tmp: Path, norm: str) -> float:
    from conta_core.data.transforms import normalize
    from conta_core.models.deeplab import build_deeplab

    path = tmp / "caffe_layout.pth"
    if not path.exists():
        torch.save({k.removeprefix("base."): v for k, v in fx.deeplab_caffe_state().items()}, path)
    cfg = {
        "backbone": "resnet101",
        "pretrained": str(path),
        "output_stride": 8,
        "aspp_rates": [6, 12, 18, 24],
        "freeze_bn": True,
        "msc_scales": [1.0, 0.75, 0.5],
        "resnet_style": "caffe",
        "input_norm": "caffe",
    }
    model = build_deeplab(cfg, fx.DEEPLAB_CLASSES).eval()
    model.base.load_state_dict({**model.base.state_dict(), **fx.deeplab_aspp_state()})
    with torch.no_grad():
        out = model(torch.from_numpy(normalize(g["deeplab/image"], norm))[None])[0].numpy()
    return float(np.abs(out - g["deeplab/logits"]).max())


def amn_diff(g, resize: str) -> float:
    from conta_core.steps.amn import compute_amn_cam

    net, worst = _amn_net(), 0.0
    for name, img, keys in zip(IDS, fx.fixture_images(), fx.fixture_keys()):
        cam, high = compute_amn_cam(net, img, keys, g[f"irn/ir_label/{name}"], CAM_SCALES, True, CPU, resize=resize)
        worst = max(
            worst, np.abs(cam - g[f"amn/cam/{name}"][1:]).max(), np.abs(high - g[f"amn/high_res/{name}"][1:]).max()
        )
    return float(worst)


def seam_table(golden: Path) -> None:
    import test_seam_parity as t

    g, cfg = t.load_golden(golden), t.official_cfg()
    state = t.build_seam_state(g)
    net = t.build_seam_net(state).eval()
    net_diff = t.measure_network(g, net)
    cam_diff, cam_agree = t.measure_cams(g, net, cfg)
    crf_diff, label_agree, pairs_equal = t.measure_crf(g, cfg)
    losses, update, update_rel = t.measure_train_step(g, state, cfg)
    aff_diff, walk_agree = t.measure_affinity(g, t.build_aff_net(g, state), cfg)
    loss_names = ("loss_cls1", "loss_cls2", "loss_rvmin1", "loss_rvmin2", "loss_er", "loss_ecr", "loss")
    rows = [
        ("SEAM network (`forward`: cam, cam_rv)", "max abs diff", f"{net_diff:.1e}", "<= 1e-4"),
        ("SEAM CAM inference (scales 0.5/1/1.5/2 + flip, min-max norm)", "max abs diff", f"{cam_diff:.1e}", "<= 1e-4"),
        ("CAM pseudo-masks (`out_cam_pred_alpha` 0.26)", "% pixels equal", f"{cam_agree:.3f}", ">= 99.9"),
        ("CRF scores la / ha (alphas 4 / 24)", "max abs diff", f"{crf_diff:.1e}", "<= 1e-4"),
        ("AffinityNet label map (VOC12AffDataset)", "% pixels equal", f"{label_agree:.3f}", "100"),
        ("pair labels (ExtractAffinityLabelInRadius)", "identical", str(pairs_equal).lower(), "identical"),
        *((f"one SEAM training step: {k}", "abs diff", f"{losses[k]:.1e}", "<= 1e-5") for k in loss_names),
        ("one SEAM training step: parameter updates", "max abs diff", f"{update:.1e}", "<= 1e-6"),
        ("one SEAM training step: per-parameter sum of abs updates", "max rel diff", f"{update_rel:.1e}", "<= 1e-4"),
        ("AffinityNet (`forward(x, to_dense=True)`)", "max abs diff", f"{aff_diff:.1e}", "<= 1e-4"),
        ("random walk (beta 8, logt 6, alpha 6)", "% pixels equal", f"{walk_agree:.3f}", ">= 99.9"),
    ]
    print("| step | measure | measured | bound (tests/test_seam_parity.py) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--golden", type=Path, help="default: tests/golden/reference_parity.npz (seam_parity.npz with --seam)"
    )
    p.add_argument("--seam", action="store_true", help="the SEAM / AffinityNet table instead")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.seam:
        seam_table(args.golden or REPO / "tests" / "golden" / "seam_parity.npz")
        return
    g = dict(np.load(args.golden or REPO / "tests" / "golden" / "reference_parity.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        dl_ref, dl_fast = deeplab_diff(g, Path(tmp), "caffe"), deeplab_diff(g, Path(tmp), "imagenet")
    e_ref, rw_ref = rw_agreement(g, 512)
    e_fast, rw_fast = rw_agreement(g, None)
    rows = [
        (
            "CAM files (cam, high_res), max abs diff",
            "cam.resize",
            f"{cam_diff(g, 'pil_bicubic'):.1e}",
            f"{cam_diff(g, 'bilinear'):.1e}",
            "<= 1e-3",
        ),
        ("IR labels, % pixels equal", "-", f"{ir_agreement(g):.3f}", "same", "100"),
        ("boundary map, max abs diff", "random_walk.pad_size", f"{e_ref:.1e}", f"{e_fast:.1e}", "-"),
        ("pseudo-masks, % pixels equal", "random_walk.pad_size", f"{rw_ref:.3f}", f"{rw_fast:.3f}", ">= 99.9"),
        (
            "DeepLab-v2 MSC logits, max abs diff",
            "segmentation.input_norm",
            f"{dl_ref:.1e}",
            f"{dl_fast:.1e}",
            "<= 1e-4",
        ),
        (
            "AMN make_amn_cam maps, max abs diff",
            "cam.resize",
            f"{amn_diff(g, 'pil_bicubic'):.1e}",
            f"{amn_diff(g, 'bilinear'):.1e}",
            "<= 1e-3",
        ),
    ]
    print("| step | key | reference value | alternative value | bound (tests/test_parity.py) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
