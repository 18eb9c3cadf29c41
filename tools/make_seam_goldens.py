#!/usr/bin/env python
"""Regenerate tests/golden/seam_parity.npz by running the OFFICIAL SEAM code.

SEAM (https://github.com/YudeWang/SEAM) is not part of this project and none of its code is
copied into it: check it out in a scratch folder and point this script at it:

    git clone https://github.com/YudeWang/SEAM /tmp/ref/seam   # 3212261
    python tools/make_seam_goldens.py --seam /tmp/ref/seam --out tests/golden/seam_parity.npz

SEAM ships its own copies of what it takes from PSA (https://github.com/jiwoon-ahn/psa at
9493e59: network/resnet38_aff.py, infer_aff.py, ExtractAffinityLabelInRadius); SEAM's are
the ones run here, because they are what SEAM's pipeline (and this project) follows
(PSA's own infer_aff differs: alpha 16, logt 8, no small-map radius fallback).

Inputs and weights come from tests/parity_fixtures.py (fixed-seed recipe): the weights are
`fill_state_dict` of the official networks' own state_dicts (full-width ResNet-38), the
images are small (SEAM_SIZES, SEAM_CROP, AFF_SIZES). Everything runs in one subprocess with
the checkout as working directory. The official scripts run as shipped, through
`runpy.run_path(..., run_name="__main__")` with a command line:

- infer_SEAM.py (--out_cam, --out_crf, --out_cam_pred; scales 0.5/1/1.5/2 + flips, CRF
  alphas 4/24, out_cam_pred_alpha 0.26) on the SEAM_SIZES images; its CRF step
  (`_crf_with_alpha` from the globals, with `orig_img` set) also on the AFF_SIZES images
  with `fixture_cams`, which have background (the SEAM images' CAMs have almost none);
- train_SEAM.py for exactly one step (--batch_size 2 --max_epoches 1 on a 2-image list):
  the loss terms and the weights after the SGD step are read from the globals run_path
  returns (loss, loss_cls, loss_er, loss_ecr, loss_rvmin1/2, loss_cls1/2, model);
- infer_aff.py (beta 8, logt 6, alpha 6) on the AFF_SIZES images with the recipe's
  `fixture_cams` as its CAM files.
Directly: network/resnet38_SEAM.Net (eval) forward on the SEAM images (cam, cam_rv),
network/resnet38_aff.Net forward(x, to_dense=True) on the padded AFF images,
voc12.data.VOC12AffDataset's label rule on the CRF outputs (its pair extraction replaced by
the identity: the full-size label map) and ExtractAffinityLabelInRadius on `aff_label_map`.

Shims, only for what a CPU run with today's libraries breaks, or what has no fixed target:
- `PIL.Image.CUBIC` (VOC12ClsDatasetMSF's resampling; removed in Pillow 10) is `PIL.Image.BICUBIC`,
  the same filter (value 3);
- `.cuda()` of tensors and modules are no-ops; `torch.cuda.device` is a null context,
  `torch.cuda.device_count()` reports 1 and `torch.nn.parallel.replicate` returns the model
  itself (infer_SEAM's thread pool indexes replicas by i % n_gpus);
- `scipy.misc.imsave` (removed from SciPy) and `np.save` keep what they are given in memory
  (np.save still writes: infer_aff and VOC12AffDataset read those files back), so no
  pickled output of the reference is ever unpickled here;
- cv2 and tensorboardX (imported at module level, used only for train_SEAM's
  visualisation every 50 steps) are stubs, and `tool.visualization.generate_vis` returns
  nothing: that block runs at step 0 and draws pictures only;
- `torch.utils.data.DataLoader` runs with num_workers 0, shuffle False, pin_memory False;
- the images come from files written in a scratch VOC-style folder (PNG data, .jpg names),
  the class labels from the fixtures instead of voc12/cls_labels.npy
  (`voc12.data.load_image_label_list_from_npy`);
- train_SEAM's training set is the fixture batch itself: VOC12ClsDataset yields the fixture
  images through the official Normalize and HWC_to_CHW only (its RandomResizeLong,
  RandomHorizontalFlip, ColorJitter and RandomCrop are random: no fixed target);
- Dropout2d is the identity during the train_SEAM step (Dropout2d.forward replaced): random
  masks have no fixed target. The parity test switches this project's Dropout2d modules to
  eval mode for the same step; BatchNorm is frozen by the official Net.train() in both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import parity_fixtures as fx  # noqa: E402

NUM_FG = fx.NUM_FG
CRF_ALPHAS = (4, 24)  # infer_SEAM crf_alpha
CAM_PRED_ALPHA = 0.26  # infer_SEAM --out_cam_pred_alpha default
WALK = {"beta": 8, "logt": 6, "alpha": 6}  # SEAM's infer_aff defaults
# a few parameters whose update by the train_SEAM step is stored in full (first 256 values)
UPDATE_KEYS = (
    "fc8.weight",
    "f9.weight",
    "f8_3.weight",
    "f8_4.weight",
    "b7.conv_branch2b2.weight",
    "b3.conv_branch2a.weight",
)


def names(prefix: str, n: int) -> list[str]:
    """VOC-style ids (11 characters, as load_img_name_list cuts them)."""
    return [f"{prefix}_{i + 1:06d}" for i in range(n)]


SEAM_IDS = names("2007", len(fx.SEAM_SIZES))
TRAIN_IDS = names("2008", 2)
AFF_IDS = names("2009", len(fx.AFF_SIZES))


def multi_hot(keys: np.ndarray) -> np.ndarray:
    y = np.zeros(NUM_FG, np.float32)
    y[np.asarray(keys, dtype=np.int64)] = 1.0
    return y


def write_voc(root: Path, images: dict[str, np.ndarray]) -> None:
    """root/JPEGImages/<id>.jpg holding PNG data (lossless; PIL reads the content, not the name)."""
    from PIL import Image

    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg", format="PNG")


def write_list(path: Path, ids: list[str]) -> str:
    path.write_text("".join(f"/JPEGImages/{i}.jpg\n" for i in ids))
    return str(path)


def install_shims(saved: dict[str, object], labels: dict[str, np.ndarray]) -> None:
    import PIL.Image
    import scipy.misc
    import torch
    import torch.nn as nn
    import torch.utils.data

    PIL.Image.CUBIC = PIL.Image.BICUBIC  # the alias (value 3) was removed in Pillow 10
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.device_count = lambda: 1
    torch.nn.parallel.replicate = lambda module, devices, *a, **k: [module for _ in devices]

    original_save = np.save

    def save(path, obj, *a, **k):
        saved[str(path)] = obj.copy() if isinstance(obj, dict) else np.array(obj)
        original_save(path, obj, *a, **k)

    np.save = save
    scipy.misc.imsave = lambda path, arr, *a, **k: saved.__setitem__(str(path), np.array(arr))

    cv2 = types.ModuleType("cv2")
    cv2.INTER_CUBIC = 2
    cv2.resize = lambda img, size, *a, **k: np.zeros((size[1], size[0], *img.shape[2:]), img.dtype)
    sys.modules["cv2"] = cv2

    class _Writer:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: None

    tbx = types.ModuleType("tensorboardX")
    tbx.SummaryWriter = _Writer
    sys.modules["tensorboardX"] = tbx

    original_loader = torch.utils.data.DataLoader

    def loader(dataset, *a, **k):
        k.update(num_workers=0, shuffle=False, pin_memory=False)
        k.pop("worker_init_fn", None)
        return original_loader(dataset, *a, **k)

    torch.utils.data.DataLoader = loader

    import tool.visualization as vis
    import voc12.data

    vis.generate_vis = lambda *a, **k: (None, None, None, None)
    voc12.data.load_image_label_list_from_npy = lambda ids: [multi_hot(labels[i]) for i in ids]


def run_script(script: str, options: dict[str, object]) -> dict:
    """An official script as __main__ with the command line --key value ...; its globals afterwards."""
    old_argv, old_stdout = sys.argv, sys.stdout
    sys.argv = [script, *(a for k, v in options.items() for a in (f"--{k}", str(v)))]
    try:
        return runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.stdout = old_argv, old_stdout  # train_SEAM's pyutils.Logger replaces stdout


def seam_state(model) -> dict:
    return fx.fill_state_dict(model.state_dict())


def part_seam(scratch: Path, arrays: dict) -> None:
    """infer_SEAM (CAMs, CRF, cam_pred) and the SEAM network's forward."""
    import torch
    from network.resnet38_SEAM import Net
    from network.resnet38d import Normalize

    saved = SAVED
    state = seam_state(Net())
    arrays["seam/state_keys"] = np.array(sorted(state))
    torch.save(state, scratch / "seam.pth")
    for d in ("cam", "pred"):
        (scratch / d).mkdir()
    g = run_script(
        "infer_SEAM.py",
        {
            "weights": str(scratch / "seam.pth"),
            "infer_list": write_list(scratch / "seam.txt", SEAM_IDS),
            "num_workers": "1",
            "voc12_root": str(scratch / "VOC2012"),
            "out_cam": str(scratch / "cam"),
            "out_crf": str(scratch / "crf"),
            "out_cam_pred": str(scratch / "pred"),
            "out_cam_pred_alpha": str(CAM_PRED_ALPHA),
        },
    )
    assert list(g["crf_alpha"]) == list(CRF_ALPHAS), g["crf_alpha"]
    model = g["model"]
    assert not model.training
    for name, img, keys in zip(SEAM_IDS, fx.seam_images(), fx.seam_keys()):
        cam_dict = saved[str(scratch / "cam" / f"{name}.npy")]
        assert sorted(cam_dict) == list(keys), (sorted(cam_dict), keys)
        arrays[f"seam/cam/{name}"] = np.stack([cam_dict[k] for k in keys]).astype(np.float32)
        arrays[f"seam/cam_pred/{name}"] = saved[str(scratch / "pred" / f"{name}.png")].astype(np.uint8)
        for alpha in CRF_ALPHAS:
            crf = saved[str(scratch / f"crf_{alpha:.1f}" / f"{name}.npy")]
            assert list(crf) == [0, *(keys + 1)], list(crf)
            arrays[f"seam/crf_{alpha}/{name}"] = np.stack(list(crf.values())).astype(np.float32)
        # the network itself at scale 1 (the background channel and the image's classes)
        x = torch.from_numpy(Normalize()(img).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            cam, cam_rv = model(x)
        channels = np.concatenate([[0], keys + 1])
        arrays[f"seam/net_cam/{name}"] = cam[0, channels].numpy()
        arrays[f"seam/net_cam_rv/{name}"] = cam_rv[0, channels].numpy()
        arrays[f"seam/net_cam_absmax/{name}"] = cam[0].abs().amax(dim=(1, 2)).numpy()  # all 21 channels

    # infer_SEAM's CRF step (its _crf_with_alpha, reading the global orig_img) also on the AFF
    # images with fixture_cams: the SEAM fixtures' CAMs leave no background under the recipe weights
    crf_with_alpha = g["_crf_with_alpha"]
    for name, img, keys, cams in zip(
        AFF_IDS, fx.aff_images(), fx.aff_keys(), fx.fixture_cams(fx.AFF_SIZES, fx.aff_keys())
    ):
        crf_with_alpha.__globals__["orig_img"] = img
        for alpha in CRF_ALPHAS:
            crf = crf_with_alpha({int(k): c for k, c in zip(keys, cams)}, alpha)
            assert list(crf) == [0, *(keys + 1)], list(crf)
            np.save(scratch / f"crf_{alpha:.1f}" / f"{name}.npy", crf)  # for VOC12AffDataset below
            arrays[f"seam/crf_{alpha}/{name}"] = np.stack(list(crf.values())).astype(np.float32)

    # VOC12AffDataset's label rule on the CRF outputs, at full size (no crop / pool / pairs)
    import voc12.data

    ds = voc12.data.VOC12AffDataset.__new__(voc12.data.VOC12AffDataset)
    ds.img_name_list = SEAM_IDS + AFF_IDS
    ds.voc12_root = str(scratch / "VOC2012")
    ds.transform = None
    ds.label_la_dir = str(scratch / f"crf_{CRF_ALPHAS[0]:.1f}")
    ds.label_ha_dir = str(scratch / f"crf_{CRF_ALPHAS[1]:.1f}")
    ds.joint_transform_list, ds.img_transform_list, ds.label_transform_list = [None], [np.asarray], [None]
    ds.extract_aff_lab_func = lambda label: label
    for i, name in enumerate(ds.img_name_list):
        _, label = ds[i]
        arrays[f"seam/aff_label/{name}"] = label.astype(np.uint8)

    extract = voc12.data.ExtractAffinityLabelInRadius(cropsize=fx.AFF_LABEL_SIZE, radius=5)
    for kind, t in zip(("bg", "fg", "neg"), extract(fx.aff_label_map())):
        arrays[f"aff/pair_label_{kind}"] = t.numpy().astype(np.uint8)


def part_train(scratch: Path, arrays: dict) -> None:
    """train_SEAM.py for one step: the loss terms and the updated weights."""
    import torch
    import voc12.data
    from network.resnet38_SEAM import Net
    from network.resnet38d import Normalize
    from tool import imutils

    state = seam_state(Net())
    torch.save(state, scratch / "seam_train.pth")
    images = dict(zip(TRAIN_IDS, fx.seam_train_images()))

    class FixtureClsDataset(voc12.data.VOC12ClsDataset):
        """The fixture batch through the official Normalize / HWC_to_CHW (no random augmentation)."""

        def __getitem__(self, idx):
            name = self.img_name_list[idx]
            img = torch.from_numpy(imutils.HWC_to_CHW(Normalize()(images[name])))
            return name, img, torch.from_numpy(self.label_list[idx])

    voc12.data.VOC12ClsDataset = FixtureClsDataset
    torch.nn.Dropout2d.forward = lambda self, x: x
    g = run_script(
        "train_SEAM.py",
        {
            "weights": str(scratch / "seam_train.pth"),
            "train_list": write_list(scratch / "train.txt", TRAIN_IDS),
            "batch_size": "2",
            "max_epoches": "1",
            "num_workers": "0",
            "crop_size": str(fx.SEAM_CROP),
            "voc12_root": str(scratch / "VOC2012"),
            "session_name": str(scratch / "train_seam"),
            "tblog_dir": str(scratch / "tb"),
        },
    )
    assert g["optimizer"].global_step == 1 and g["max_step"] == 1
    for key in ("loss", "loss_cls", "loss_er", "loss_ecr", "loss_rvmin1", "loss_rvmin2", "loss_cls1", "loss_cls2"):
        arrays[f"train/{key}"] = np.float64(g[key].item())
    after = g["model"].module.state_dict()
    keys = sorted(k for k, p in g["model"].module.named_parameters())
    arrays["train/param_keys"] = np.array(keys)
    arrays["train/update_abs_sum"] = np.array([(after[k] - state[k]).double().abs().sum().item() for k in keys])
    for key in UPDATE_KEYS:
        arrays[f"train/update/{key}"] = (after[key] - state[key]).flatten()[:256].numpy()


def part_aff(scratch: Path, arrays: dict) -> None:
    """infer_aff.py's random walk and resnet38_aff.Net's dense affinity."""
    import torch
    import torch.nn.functional as F
    from network.resnet38_aff import Net
    from network.resnet38d import Normalize

    saved = SAVED
    state = seam_state(Net())
    arrays["aff/state_keys"] = np.array(sorted(state))
    torch.save(state, scratch / "aff.pth")
    (scratch / "affcam").mkdir()
    (scratch / "rw").mkdir()
    for name, cams, keys in zip(AFF_IDS, fx.fixture_cams(fx.AFF_SIZES, fx.aff_keys()), fx.aff_keys()):
        np.save(scratch / "affcam" / f"{name}.npy", {int(k): c for k, c in zip(keys, cams)})
    g = run_script(
        "infer_aff.py",
        {
            "weights": str(scratch / "aff.pth"),
            "infer_list": write_list(scratch / "aff.txt", AFF_IDS),
            "num_workers": "0",
            "cam_dir": str(scratch / "affcam"),
            "voc12_root": str(scratch / "VOC2012"),
            "out_rw": str(scratch / "rw"),
            "alpha": str(WALK["alpha"]),
            "beta": str(WALK["beta"]),
            "logt": str(WALK["logt"]),
        },
    )
    model = g["model"]
    assert not model.training
    for name, img in zip(AFF_IDS, fx.aff_images()):
        arrays[f"aff/walk/{name}"] = saved[str(scratch / "rw" / f"{name}.png")].astype(np.uint8)
        x = torch.from_numpy(Normalize()(img).transpose(2, 0, 1).copy())[None]
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -(-w // 8) * 8 - w, 0, -(-h // 8) * 8 - h))
        with torch.no_grad():
            arrays[f"aff/dense/{name}"] = model(x, True).numpy()


SAVED: dict[str, object] = {}


def reference(out: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="seam_parity_"))
    images = {
        **dict(zip(SEAM_IDS, fx.seam_images())),
        **dict(zip(TRAIN_IDS, fx.seam_train_images())),
        **dict(zip(AFF_IDS, fx.aff_images())),
    }
    labels = {
        **dict(zip(SEAM_IDS, fx.seam_keys())),
        **dict(zip(TRAIN_IDS, fx.seam_train_keys())),
        **dict(zip(AFF_IDS, fx.aff_keys())),
    }
    write_voc(scratch / "VOC2012", images)
    install_shims(SAVED, labels)
    arrays: dict[str, np.ndarray] = {}
    for part in (part_seam, part_train, part_aff):
        print(f"== {part.__name__}", flush=True)
        part(scratch, arrays)
    for name in SEAM_IDS + AFF_IDS:
        arrays[f"image/{name}"] = images[name]
    np.savez_compressed(out, **arrays)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seam", type=Path, required=True, help="checkout of YudeWang/SEAM")
    p.add_argument("--out", type=Path, default=REPO / "tests" / "golden" / "seam_parity.npz")
    p.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part_out:
        os.chdir(args.seam)
        sys.path.insert(0, str(args.seam.resolve()))
        reference(args.part_out)
        return
    scratch = Path(tempfile.mkdtemp(prefix="seam_parity_out_"))
    part_out = scratch / "seam.npz"
    subprocess.run(
        [sys.executable, __file__, "--seam", str(args.seam.resolve()), "--part-out", str(part_out)], check=True
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    tmp.write_bytes(part_out.read_bytes())
    tmp.replace(args.out)
    with np.load(args.out) as g:
        n = len(g.files)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {n} arrays)")


if __name__ == "__main__":
    main()
