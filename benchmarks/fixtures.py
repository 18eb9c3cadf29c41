"""Fixed inputs of the per-step benchmarks: synthetic images from conta_core.data.synthetic
with a fixed seed, random-init models with a fixed seed, CAMs derived from the GT masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "config.yaml"
DATA_SEED = 0  # synthetic images
MODEL_SEED = 0  # random-init weights
CAM_SEED = 0  # noise of the GT-derived CAMs
CAM_BLUR_SIGMA = 0.04  # Gaussian blur of the GT-derived CAMs, as a fraction of the image side
CAM_NOISE = 0.15  # uniform noise amplitude added to the GT-derived CAMs


# --------------------------------------------------------------------------- inputs


def load_config() -> dict:
    """The repository's default config/config.yaml as a dict."""
    import yaml

    return yaml.safe_load(CONFIG.read_text())


def make_dataset(root: Path, images: int, size: int, seed: int = DATA_SEED) -> Path:
    """Generate `images` training images of size x size into root; returns the manifest path."""
    from conta_core.data.synthetic import generate_synthetic

    cfg = dict(load_config()["dataset"]["synthetic"])
    cfg.update(num_train=int(images), num_val=1, image_size=int(size), seed=int(seed))
    generate_synthetic(root, cfg)
    return root / "manifest.json"


def train_ids(manifest_path: Path, images: int) -> list[str]:
    from conta_core.data.manifest import Manifest

    return Manifest.load(manifest_path).ids("train")[: int(images)]


def make_classifier(path: Path, num_fg: int, seed: int = MODEL_SEED) -> Path:
    """A random-init CAM classifier checkpoint (config classifier section, no context)."""
    import torch

    from conta_core.infra.fileio import save_torch
    from conta_core.models.classifier import build_classifier

    cls_cfg = {**load_config()["classifier"], "pretrained": None}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(cls_cfg, None, num_fg)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"state_dict": state, "config": {"classifier": cls_cfg, "context": None, "num_fg": num_fg}})
    return path


def make_edge_net(path: Path, seed: int = MODEL_SEED) -> Path:
    """A random-init IRNet boundary-net checkpoint (config irn section)."""
    from conta_core.infra.fileio import save_torch
    from conta_core.steps.irn import build_edge_net

    cfg = {**load_config()["irn"], "backbone_init": "random", "pretrained": None}
    net = build_edge_net(cfg, None, seed)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_torch(path, {"state_dict": state, "config": cfg})
    return path


def make_deeplab(path: Path, num_classes: int, seed: int = MODEL_SEED) -> Path:
    """A random-init DeepLab-v2 (MSC) checkpoint (config segmentation section)."""
    import torch

    from conta_core.infra.fileio import save_torch
    from conta_core.models.deeplab import build_deeplab, checkpoint_dict

    cfg = {**load_config()["segmentation"], "pretrained": None}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_deeplab(cfg, num_classes)
    save_torch(path, checkpoint_dict(model, cfg, num_classes, iteration=0))
    return path


def make_cam_files(manifest_path: Path, ids: list[str], out_dir: Path, seed: int = CAM_SEED) -> Path:
    """CAM files (conta_core.infra.fileio.save_cam) derived from the GT masks: blurred class masks + noise.

    Realistic blob-shaped maps for the CRF and the random walk without running a network.
    """
    from scipy.ndimage import gaussian_filter

    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import CAM_SUFFIX, load_label_png, save_cam
    from conta_core.steps.cam import CAM_STRIDE

    manifest = Manifest.load(manifest_path)
    rng = np.random.default_rng(seed)
    for image_id in ids:
        gt = load_label_png(manifest.mask_file(image_id))
        h, w = gt.shape
        keys = np.asarray(manifest.labels[image_id], dtype=np.int64) - 1
        sigma = CAM_BLUR_SIGMA * max(h, w)
        maps = [gaussian_filter((gt == k + 1).astype(np.float32), sigma) for k in keys]
        high = np.stack(maps) if maps else np.zeros((0, h, w), np.float32)
        high = high + CAM_NOISE * rng.random(high.shape, dtype=np.float32)
        high = high / (high.reshape(len(keys), -1).max(axis=1)[:, None, None] + 1e-5) if len(keys) else high
        ys = np.arange(0, h, CAM_STRIDE)
        xs = np.arange(0, w, CAM_STRIDE)
        save_cam(
            out_dir / f"{image_id}{CAM_SUFFIX}", keys, high[:, ys][:, :, xs].astype(np.float32), high.astype(np.float32)
        )
    return out_dir
