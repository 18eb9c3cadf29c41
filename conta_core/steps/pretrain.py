"""Object-centric pre-training: the generated dataset's stand-in for ImageNet weights.

IRNet, CONTA and DeepLab all start from ImageNet weights; this machine cannot download them,
and a randomly initialised CAM network does not localise on the generated dataset (measured,
docs/results.md: at the best threshold its CAMs reach about 21 mIoU, and the pseudo-masks
and segmentation built on them collapse). This step builds the analogous source model:

- a *source* set of isolated objects, one per image, of the synthetic class catalogue, each
  on a background texture drawn uniformly at random: no co-occurrence, no context texture,
  no copied parts (so the source carries none of the target's confounders), generated in
  memory from the seed (no file of it is written, and no image or mask of the WSSS dataset
  is used);
- single-label classification of those images (cross-entropy), like ImageNet's;
- the network's state_dict without `fc`, loadable through any `pretrained:` key: a
  torchvision-layout ResNet (`pretrain.backbone`, for the classifier and DeepLab) or, for
  method seam, SEAM's ResNet-38 trunk at `seam.width` with the official key names (backbone
  "resnet38_w<width>", conta_core.infra.config.resnet38_tag). [OURS] ResNet-38 gets the same
  source set and schedule as the ResNet, its BatchNorm trained (a random start), the official
  dropout of b6 / b7 active, and as classifier a global average pool of the last feature map
  (conv6) and a linear layer.

The supervision is image-level class labels of a different, object-centric image set, the
same kind that ImageNet pre-training brings to the paper's pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from conta_core.data import synthetic
from conta_core.data.transforms import normalize
from conta_core.infra.checkpoint import cpu_state, save_model
from conta_core.infra.config import config_error, resnet38_tag
from conta_core.infra.fileio import atomic_path, write_csv
from conta_core.infra.progress import track
from conta_core.infra.training import Loop, Resume, fingerprint, fit
from conta_core.models.backbone import RESNETS, build_torchvision_resnet
from conta_core.models.resnet38 import ResNet38
from conta_core.steps.train_cls import poly_step

log = logging.getLogger("conta.pretrain")

CFG_KEYS = (
    "backbone",
    "num_images",
    "image_size",
    "object_frac",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "poly_power",
)
SOURCE_SEED_TAG = 7  # separates the source images' random stream from the target dataset's


def check_cfg(cfg: dict) -> None:
    """Raise ValueError naming the `pretrain.*` key that is missing or out of range."""
    for key in CFG_KEYS:
        if key not in cfg:
            raise config_error(f"pretrain.{key}", "missing")
    lo, hi = cfg["object_frac"]
    if not 0 < lo <= hi <= 1:
        raise config_error("pretrain.object_frac", f"need 0 < low <= high <= 1, got {cfg['object_frac']}")
    if int(cfg["num_images"]) < int(cfg["batch_size"]):
        raise config_error("pretrain.num_images", "fewer images than pretrain.batch_size")
    if int(cfg["image_size"]) < 16:
        raise config_error("pretrain.image_size", "must be >= 16")
    if cfg["backbone"] not in RESNETS and resnet38_width(cfg["backbone"]) is None:
        raise config_error(
            "pretrain.backbone", f"expected one of {RESNETS} or resnet38_w<width>, got {cfg['backbone']!r}"
        )


def resnet38_width(backbone: str) -> float | None:
    """The width of a "resnet38_w<width>" backbone name (resnet38_tag), else None."""
    head, _, width = str(backbone).partition("_w")
    try:
        value = float(width) if head == "resnet38" else None
    except ValueError:
        return None
    return value if value and value > 0 and resnet38_tag(value) == backbone else None


class ResNet38Classifier(ResNet38):
    """SEAM's ResNet-38 trunk with a pre-training head: logits = fc(mean over H, W of conv6).
    Its state_dict is the trunk's (official key names) plus fc.*; BatchNorm and conv1a train."""

    def __init__(self, width: float, num_classes: int) -> None:
        super().__init__(width)
        self.freeze_bn = self.freeze_early = False
        self.fc = torch.nn.Linear(self.channels["b7"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32[B, 3, H, W] -> logits float32[B, num_classes]."""
        return self.fc(super().forward(x).mean((2, 3)))


def build_network(backbone: str, num_classes: int) -> torch.nn.Module:
    """The network to pre-train, randomly initialised: a torchvision-layout ResNet at output
    stride 32 with a new `fc`, or ResNet38Classifier for "resnet38_w<width>"."""
    width = resnet38_width(backbone)
    if width is not None:
        return ResNet38Classifier(width, num_classes)
    net = build_torchvision_resnet(backbone, output_stride=32, dilate=False)
    net.fc = torch.nn.Linear(net.fc.in_features, num_classes)
    return net


def source_images(cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The source set: (images uint8[N, S, S, 3], labels int64[N] in 0..C-1).

    Classes are balanced (image i has class i mod C, in a seeded random order); class k is
    the k-th entry of the synthetic catalogue, i.e. foreground class k + 1 of the dataset.
    """
    names = list(synthetic.CLASS_CATALOGUE)
    lo, hi = cfg["object_frac"]
    size = int(cfg["image_size"])
    sc = synthetic.SynthConfig(
        num_train=1,
        num_val=1,
        image_size=size,
        seed=seed,
        min_objects=1,
        max_objects=1,
        min_object_frac=lo,
        max_object_frac=hi,
        cooccurrence=0.0,
        background_context=0.0,
        part_context=0.0,
        control=True,
    )
    rng = np.random.default_rng([seed, SOURCE_SEED_TAG])
    n = int(cfg["num_images"])
    labels = rng.permutation(np.arange(n) % len(names)).astype(np.int64)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, k in enumerate(track(labels, "pretrain images")):
        images[i] = synthetic.render_scene(_isolated_object(rng, sc, names[k]), sc).image
    return images, labels


def _isolated_object(rng: np.random.Generator, sc: synthetic.SynthConfig, cls: str) -> synthetic.SceneSpec:
    """One object of class `cls` on a uniformly drawn texture."""
    box = synthetic._object_box(rng, sc, cls)
    jitter = tuple(int(v) for v in rng.integers(-synthetic.COLOR_JITTER, synthetic.COLOR_JITTER + 1, 3))
    obj = synthetic.ObjectSpec(cls, box, False, int(rng.integers(2**31)), jitter)
    texture = synthetic.TEXTURES[int(rng.integers(len(synthetic.TEXTURES)))]
    return synthetic.SceneSpec(texture=texture, texture_seed=int(rng.integers(2**31)), objects=[obj])


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8[N, S, S, 3] -> normalised float32[N, 3, S, S] (the pipeline's normalisation)."""
    return torch.from_numpy(np.stack([normalize(im) for im in images]))


def pretrain_backbone(
    cfg: dict,
    seed: int,
    out_path: str | os.PathLike,
    device: torch.device | str,
    log_csv: str | os.PathLike | None = None,
    checkpoint: dict | None = None,
) -> dict:
    """Train the backbone (build_network) on the source set; save its state_dict without `fc`.

    cfg: the `pretrain:` config section. Returns {"final_loss", "train_accuracy"} (last epoch).
    Augmentation: a seeded random horizontal flip per image. Deterministic on CPU.
    checkpoint: the `checkpoint` config section (conta_core.infra.training: resumable checkpoints
    in <out_path>.resume/, resumed by a rerun).
    """
    check_cfg(cfg)
    images, labels = source_images(cfg, seed)
    x_all, y_all = _to_tensor(images), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(cfg["backbone"], len(synthetic.CLASS_CATALOGUE))
    net.to(device).train()
    opt = torch.optim.SGD(
        net.parameters(), lr=float(cfg["lr"]), momentum=float(cfg["momentum"]), weight_decay=float(cfg["weight_decay"])
    )
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]  # poly_step's base
    resume = Resume(out_path, checkpoint, fingerprint("pretrain", cfg, seed))
    rows = _train(net, opt, x_all, y_all, cfg, gen, device, resume)
    save_model(
        out_path,
        "pretrain",
        cpu_state(net, drop_prefix="fc."),
        dict(cfg),
        seed=int(seed),
        train_accuracy=rows[-1]["accuracy"],
    )
    if log_csv is not None:
        write_csv(log_csv, pd.DataFrame(rows, columns=["epoch", "iter", "loss", "lr"]))
    resume.finish()
    return {"final_loss": rows[-1]["loss"], "train_accuracy": rows[-1]["accuracy"]}


def _train(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    cfg: dict,
    gen: torch.Generator,
    device,
    resume: Resume | None = None,
) -> list[dict]:
    """SGD with poly decay per iteration; returns per-iteration rows (epoch, iter, loss, lr, accuracy)."""
    bs, epochs = int(cfg["batch_size"]), int(cfg["epochs"])
    per_epoch = len(x_all) // bs
    max_step = epochs * per_epoch

    def batches(epoch: int, skip: int):
        order = torch.randperm(len(x_all), generator=gen)  # drawn at the epoch start, also when resumed
        flips = torch.rand(len(x_all), generator=gen) < 0.5
        for b in range(skip, per_epoch):
            idx = order[b * bs : (b + 1) * bs]
            yield torch.where(flips[idx, None, None, None], x_all[idx].flip(3), x_all[idx]), y_all[idx]

    def step(batch: tuple[torch.Tensor, torch.Tensor], step: int, epoch: int) -> dict:
        x, y = batch[0].to(device), batch[1].to(device)
        lr = poly_step(opt, step, max_step, float(cfg["poly_power"]))
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {
            "epoch": epoch,
            "iter": step,
            "loss": float(loss.detach()),
            "lr": lr,
            "_correct": int((logits.argmax(1) == y).sum()),
        }

    def end_epoch(epoch: int, rows: list[dict]) -> None:
        rows[-1]["accuracy"] = sum(r["_correct"] for r in rows if r["epoch"] == epoch) / (per_epoch * bs)
        log.info("epoch %d/%d: loss %.4f, accuracy %.4f", epoch + 1, epochs, rows[-1]["loss"], rows[-1]["accuracy"])

    return fit(
        Loop(
            name="pretrain",
            model=net,
            optimizer=opt,
            max_step=max_step,
            steps_per_epoch=per_epoch,
            batches=batches,
            step=step,
            resume=resume,
            generators=[gen],
            end_epoch=end_epoch,
        )
    )


# --- content-addressed cache of the generated pre-training [OURS] ----------------------------

CACHE_SOURCES = (
    "steps/pretrain.py",
    "infra/training.py",
    "infra/checkpoint.py",
    "data/synthetic.py",
    "data/transforms.py",
    "models/backbone.py",
    "models/resnet.py",
    "models/resnet38.py",
    "steps/train_cls.py",  # poly_step
)


def cache_key(cfg: dict, seed: int, device: torch.device | str) -> str:
    """What the weights depend on: the `pretrain` section, the seed, the device type, the torch
    version and the source of the modules that generate and train (any edit is a new key)."""
    h = hashlib.sha256(
        json.dumps(
            {"cfg": cfg, "seed": int(seed), "device": torch.device(device).type, "torch": torch.__version__},
            sort_keys=True,
        ).encode()
    )
    root = Path(__file__).resolve().parents[1]  # conta_core/
    for rel in CACHE_SOURCES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()[:20]


def pretrain_cached(
    cfg: dict,
    seed: int,
    out_path: str | os.PathLike,
    device: torch.device | str,
    log_csv: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    checkpoint: dict | None = None,
) -> bool:
    """`pretrain_backbone`, reusing an earlier run's identical result from `cache_dir`.

    The cache entry cache_dir/<backbone>-<cache_key>/ holds weights.pth and train_log.csv;
    a hit copies both to out_path / log_csv (no training), a miss trains and then stores them.
    Runs of one results folder with the same pretrain settings thus pre-train once; any change
    of settings, seed, device type, torch or the generating code is a new key, so an entry is
    never stale. cache_dir None: no cache. Returns True on a hit.
    """
    if cache_dir is None:
        pretrain_backbone(cfg, seed, out_path, device, log_csv, checkpoint=checkpoint)
        return False
    check_cfg(cfg)
    entry = Path(cache_dir) / f"{cfg['backbone']}-{cache_key(cfg, seed, device)}"
    cached = {entry / "weights.pth": Path(out_path), entry / "train_log.csv": Path(log_csv)}
    if all(src.is_file() for src in cached):
        for src, dst in cached.items():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        log.info("pretrain: reused %s (same settings, seed and code)", entry)
        return True
    pretrain_backbone(cfg, seed, out_path, device, log_csv, checkpoint=checkpoint)
    for src, dst in cached.items():
        with atomic_path(src) as tmp:
            shutil.copyfile(dst, tmp)
    log.info("pretrain: stored in the cache %s", entry)
    return False
