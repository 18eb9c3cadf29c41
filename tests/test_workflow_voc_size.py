"""End-to-end at VOC size: .test/voc-size/config.yaml over config/voc12.yaml on generated
500 x 375 images in the VOC layout with random-init weights in the real file layouts
(torchvision ResNet-50, caffe-layout DeepLab-v2 ResNet-101, ResNet-38 with SEAM's key names),
methods irn, amn and seam, round 1 (so the context round runs). Asserts what breaks at size:
every artifact there and of the image's size, the context diagnostics and the confounding
measures written; not mIoU. SEAM runs its ResNet-38 at seam.width 0.125 (.test/voc-size): every
size convention is the official one (crop 448, RandomResizeLong 448-768, CAM scales 0.5-2 +
flip at 500 x 375, CRF and walk at size), only the channel counts are smaller, because the
official width costs about 0.8 TFLOP per 448 px pass (2 min per image's CAMs on this CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from conftest import REPO, copy_run, run_snakemake
from parity_fixtures import fill_state_dict, torchvision_to_caffe
from PIL import Image

from conta_core.infra.fileio import load_cam, load_label_png, load_torch, save_label_png
from conta_core.models.resnet38 import ResNet38

pytestmark = pytest.mark.e2e
W, H = 500, 375  # VOC's most common image size
TRAIN = {"2007_000032": [1, 15], "2007_000039": [12, 15], "2007_000063": [1]}  # id -> VOC classes
VAL = {"2007_000033": [1, 15], "2007_000042": [12]}
SEAM_WIDTH = yaml.safe_load((REPO / ".test/voc-size/config.yaml").read_text())["seam"]["width"]


def _scene(classes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8[H, W, 3] textured image with one ellipse per class; uint8[H, W] mask with a void band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = rng.uniform(60, 190, 3) + rng.normal(0, 12, (H, W, 3))
    mask = np.zeros((H, W), np.uint8)
    for k in classes:
        cy, cx, ry, rx = rng.uniform(100, 275), rng.uniform(120, 380), rng.uniform(50, 110), rng.uniform(60, 140)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3) + rng.normal(0, 12, (int(inside.sum()), 3))
        mask[inside] = k
    edge = np.zeros_like(mask, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    mask[edge] = 255
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_voc_size(root: Path) -> dict:
    """VOC layout under root/VOCdevkit/VOC2012, weights under root/weights; returns the paths overlay."""
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for n, (i, ks) in enumerate({**TRAIN, **VAL}.items()):
        img, mask = _scene(ks, n)
        Image.fromarray(img).save(voc / "JPEGImages" / f"{i}.jpg", quality=90)
        save_label_png(voc / "SegmentationClass" / f"{i}.png", mask)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VAL) + "\n")
    weights = root / "weights"
    weights.mkdir()
    r50 = fill_state_dict(torchvision.models.resnet50(weights=None).state_dict())
    torch.save(r50, weights / "resnet50-19c8e357.pth")
    r101 = {k: v for k, v in torchvision.models.resnet101(weights=None).state_dict().items() if not k.startswith("fc.")}
    torch.save(torchvision_to_caffe(fill_state_dict(r101), prefix="base."), weights / "deeplabv1_resnet101-coco.pth")
    r50_path, dl_path = str(weights / "resnet50-19c8e357.pth"), str(weights / "deeplabv1_resnet101-coco.pth")
    r38_path = str(weights / "resnet38_imagenet.pth")  # what `conta fetch voc12 --only resnet38` writes
    torch.save(fill_state_dict(ResNet38(SEAM_WIDTH).state_dict()), r38_path)
    return {
        "dataset": {"root": str(voc), "sbd_root": None},
        "classifier": {"pretrained": r50_path},
        "irn": {"pretrained": r50_path},
        "amn": {"pretrained": r50_path},
        "segmentation": {"pretrained": dl_path},
        "seam": {"pretrained": r38_path, "aff": {"pretrained": r38_path}},
    }


@pytest.fixture(scope="module")
def voc_size(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc-size")
    paths = root / "paths.yaml"
    paths.write_text(yaml.safe_dump(make_voc_size(root)))
    return root, paths


def _run(work: Path, paths: Path, method: str) -> Path:
    over = work / "method.yaml"
    over.write_text(yaml.safe_dump({"method": method, "results_dir": "results"}))
    cfgs = [REPO / "config/voc12.yaml", REPO / ".test/voc-size/config.yaml", paths, over]
    run_snakemake(work, cfgs[0], "--configfile", *map(str, cfgs), "--", "round1", timeout=1800)
    return work / "results" / "voc-size"


@pytest.fixture(scope="module")
def irn_run(voc_size, tmp_path_factory):
    work = tmp_path_factory.mktemp("voc-size-irn")
    _run(work, voc_size[1], "irn")
    return work


def _check(run: Path, method: str) -> None:
    for t in (0, 1):
        r = run / f"round{t}"
        for i in TRAIN:
            cam = load_cam(r / "cam" / "0" / f"{i}.npz")
            assert cam["high_res"].shape[1:] == (H, W)
            for stage in ("ir_label", "pseudo_mask"):
                assert load_label_png(r / stage / "0" / f"{i}.png").shape == (H, W), (stage, i)
            assert load_label_png(r / "seg_pred" / "train" / "0" / f"{i}.png").shape == (H, W)
        for i in VAL:
            assert load_label_png(r / "seg_pred" / "val" / "0" / f"{i}.png").shape == (H, W)
        if method == "seam":  # AffinityNet's la / ha CRF scores at full size
            la = np.load(r / "ir_label" / "0" / f"{next(iter(TRAIN))}.npz")["la"]
            assert la.shape[1:] == (H, W)
            assert load_torch(r / "aff" / "model.pth")["kind"] == "affinity"
        if method == "amn":
            assert load_cam(r / "amn_cam" / "0" / f"{next(iter(TRAIN))}.npz")["high_res"].shape[1:] == (H, W)
        for f in ("cam_eval.csv", "pseudo_mask_eval.csv", "seg_eval_val.csv"):
            assert (r / f).is_file(), f
        for stage in ("cam", "pseudo_mask", "seg_train", "seg_val"):
            assert (r / f"confounding_{stage}.json").is_file()
    assert (run / "round0" / "confounder.h5").is_file()  # what round 1 attends over
    summary = pd.read_csv(run / "round1" / "summary.csv")
    assert summary["round"].tolist() == [0, 1] and summary["cam_miou"].notna().all()
    if method in ("irn", "seam"):  # the classifier's context diagnostics (AMN's context is inside AMN)
        assert (run / "round1" / "context_diagnostics.json").is_file()


def test_voc_size_irn_round1_end_to_end(irn_run):
    _check(irn_run / "results" / "voc-size", "irn")


def test_voc_size_amn_round1_end_to_end(voc_size, irn_run, tmp_path):
    """method amn, from a copy of the irn run: the steps both methods share (data, round 0's
    classifier, CAMs and IR labels) are reused, AMN and everything downstream runs."""
    work = copy_run(irn_run, tmp_path / "w")
    _check(_run(work, voc_size[1], "amn"), "amn")


def test_voc_size_seam_round1_end_to_end(voc_size, irn_run, tmp_path):
    """method seam, from a copy of the irn run (the data step is reused): SEAM at the official
    sizes (crop 448, RandomResizeLong, 4 CAM scales + flip at 500 x 375), CRF la / ha labels,
    AffinityNet and its walk at size, then DeepLab-v2 and round 1 with CONTA at block 5."""
    work = copy_run(irn_run, tmp_path / "w")
    _check(_run(work, voc_size[1], "seam"), "seam")
