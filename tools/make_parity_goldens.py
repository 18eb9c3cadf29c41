#!/usr/bin/env python
"""Regenerate tests/golden/reference_parity.npz by running the OFFICIAL reference code.

The reference repositories are not part of this project and none of their code is copied
into it: check them out in a scratch folder (any location) and point this script at them:

    git clone https://github.com/jiwoon-ahn/irn          /tmp/ref/irn       # a2ece00
    git clone https://github.com/kazuto1011/deeplab-pytorch /tmp/ref/deeplab  # 4219467
    git clone https://github.com/gaviotas/AMN             /tmp/ref/amn       # 75c1999
    pip install imageio          # IRNet/AMN read and write images with it
    python tools/make_parity_goldens.py --irn /tmp/ref/irn --deeplab /tmp/ref/deeplab \\
        --amn /tmp/ref/amn --out tests/golden/reference_parity.npz

Inputs and weights come from tests/parity_fixtures.py (fixed-seed recipe). Each reference
runs in its own subprocess with its repository as the working directory (IRNet and AMN both
have top-level packages named net/misc/step/voc12). Their step functions are called as
shipped (`step.make_cam._work`, `step.cam_to_ir_label._work`,
`step.make_sem_seg_labels._work`, `step.make_amn_cam._work`, deeplab-pytorch's
`DeepLabV2_ResNet101_MSC`), on the CPU. Shims, only for what a CPU run with today's
libraries breaks: `.cuda()` and `torch.cuda.device` are no-ops, make_sem_seg_labels gets
0-dim image sizes (today's numpy refuses its 1-element size arrays as slice bounds),
`torch.cuda.device_count()`
reports 2 (their progress printing divides by len(data) // 20 on the last process only, and
we run process 0), `resnet50(pretrained=True)` does not download (the recipe weights are
loaded instead), `imageio.imread` returns the fixture image of a VOC-style id, and the class
labels come from the fixtures instead of voc12/cls_labels.npy.
One deliberate difference: AMN's `Net.train()` override never calls `nn.Module.train`, so
`model.eval()` leaves its Dropout(0.1) active and make_amn_cam's maps change from run to
run (no fixed target exists). The goldens are made with that Dropout switched off, which is
what `amn.inference_dropout: false` does in this project (`true` reproduces the quirk).
The reference's CAM .npy files (pickled dicts) are read with conta_core.infra.fileio.read_irnet_cam,
the restricted reader of `conta import-cams` (numpy arrays and torch tensors only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

CAM_SCALES = (1.0, 0.5, 1.5, 2.0)  # IRNet cam_scales
IR_THRESHOLDS = (0.30, 0.05)  # IRNet conf_fg_thres, conf_bg_thres
RW = {"beta": 10, "exp_times": 8, "sem_seg_bg_thres": 0.25}  # IRNet make_sem_seg_labels defaults


def voc_ids(n: int | None = None) -> list[str]:
    """VOC-style ids of the fixture images (the first n; all of IMAGE_SIZES by default)."""
    return [f"2007_{i + 1:06d}" for i in range(len(fx.IMAGE_SIZES) if n is None else n)]


def our_cam_state() -> dict:
    from conta_core.models.classifier import CAMNet

    net = CAMNet(fx.NUM_FG, backbone="resnet50", frozen_stages=0)
    return fx.fill_state_dict(net.state_dict())


def our_edge_state() -> dict:
    from conta_core.models.irn import EdgeNet

    return fx.fill_state_dict(EdgeNet("resnet50").state_dict())


def our_amn_state() -> dict:
    from conta_core.models.amn import AMNNet

    return fx.fill_state_dict(AMNNet(fx.NUM_FG, backbone="resnet50").state_dict())


def backbone_to_resnet(state: dict, prefix: str = "backbone.") -> dict:
    """ResNetBackbone keys (stages.0 = conv1, bn1, relu, maxpool, layer1) -> torchvision/IRNet names."""
    out = {}
    for k, v in state.items():
        if not k.startswith(prefix + "stages."):
            continue
        parts = k[len(prefix) + len("stages.") :].split(".")
        stage = int(parts[0])
        if stage == 0:
            sub = int(parts[1])
            name = {0: "conv1", 1: "bn1"}.get(sub)
            rest = parts[2:]
            if sub == 4:
                name, rest = "layer1", parts[2:]
            out[".".join([name, *rest])] = v
        else:
            out[".".join([f"layer{stage + 1}", *parts[1:]])] = v
    return out


def install_shims(images: dict[str, np.ndarray]) -> None:
    import imageio
    import torch
    import torch.nn as nn

    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.device_count = lambda: 2
    imageio.imread = lambda path, *a, **k: images[Path(path).stem].copy()

    import net.resnet50 as resnet50

    original = resnet50.resnet50
    resnet50.resnet50 = lambda pretrained=True, **kw: original(pretrained=False, **kw)


def multi_hot(keys: np.ndarray) -> np.ndarray:
    y = np.zeros(fx.NUM_FG, np.float32)
    y[keys] = 1.0
    return y


def msf_dataset(scales: tuple[float, ...], keys: list[np.ndarray] | None = None):
    """IRNet's multi-scale dataset over the fixture ids (keys: the classes; fixture_keys() by default)."""
    import voc12.dataloader as dl

    keys = fx.fixture_keys() if keys is None else keys
    ds = dl.VOC12ClassificationDatasetMSF.__new__(dl.VOC12ClassificationDatasetMSF)
    ds.img_name_list = np.array([int(i.replace("_", "")) for i in voc_ids(len(keys))])
    ds.voc12_root = "fixture"
    ds.img_normal = dl.TorchvisionNormalize()
    ds.scales = scales
    ds.label_list = [multi_hot(k) for k in keys]
    return ds


def image_dataset(n: int | None = None):
    import voc12.dataloader as dl

    ds = dl.VOC12ImageDataset.__new__(dl.VOC12ImageDataset)
    ds.img_name_list = np.array([int(i.replace("_", "")) for i in voc_ids(n)])
    ds.voc12_root = "fixture"
    ds.img_normal = None
    ds.to_torch = False
    ds.resize_long, ds.rescale, ds.crop_size, ds.crop_method, ds.hor_flip = None, None, None, None, False
    return ds


@contextlib.contextmanager
def timed(what: str):
    """Print the wall time of a reference step on the 8 fixtures (benchmarks/RESULTS.md, "Fidelity")."""
    import time

    t0 = time.perf_counter()
    yield
    print(f"timing: {what}: {time.perf_counter() - t0:.2f} s for {len(fx.IMAGE_SIZES)} images", flush=True)


def _scalar_size_loader(loader_cls):
    """make_sem_seg_labels slices with np.asarray(pack['size'])[0], a 1-element array that
    today's numpy refuses as an index: hand it 0-dim sizes (the same values)."""

    def make(*a, **k):
        for pack in loader_cls(*a, **k):
            pack["size"] = [s.reshape(()) for s in pack["size"]]
            yield pack

    return make


def read_png(path: Path) -> np.ndarray:
    """A label PNG the reference wrote, read with PIL (imageio.imread is shimmed)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im, dtype=np.uint8)
    assert arr.ndim == 2, (path, arr.shape)
    return arr


def read_ref_cam(path: Path) -> dict:
    """The reference's CAM .npy dict, through the project's restricted reader (no pickle.load)."""
    from conta_core.infra.fileio import read_irnet_cam

    return read_irnet_cam(path)


def reference_cam_model():
    """IRNet's net.resnet50_cam.CAM with the recipe weights (run inside the IRNet checkout)."""
    import net.resnet50_cam as cam_net

    state = our_cam_state()
    model = cam_net.CAM()
    missing, unexpected = model.resnet50.load_state_dict(backbone_to_resnet(state), strict=False)
    assert not unexpected and all(k.startswith("fc.") for k in missing), (missing, unexpected)
    model.classifier.weight.data.copy_(state["classifier.weight"])
    model.eval()  # IRNet's Net.train() override returns None, so eval() does too
    return model


def reference_edge_model():
    """IRNet's net.resnet50_irn.EdgeDisplacement with the recipe weights of the project's EdgeNet."""
    import net.resnet50_irn as irn_net

    edge_state = our_edge_state()
    edge = irn_net.EdgeDisplacement()
    edge.resnet50.load_state_dict(backbone_to_resnet(edge_state), strict=True)
    for i in range(5):
        for j in (0, 1):
            for leaf in ("weight", "bias"):
                key = f"edge_levels.{i}.{j}.{leaf}"
                if key in edge_state:
                    getattr(edge, f"fc_edge{i + 1}")[j].__getattr__(leaf).data.copy_(edge_state[key])
    edge.fc_edge6.weight.data.copy_(edge_state["edge_out.weight"])
    edge.fc_edge6.bias.data.copy_(edge_state["edge_out.bias"])
    edge.eval()
    return edge


def part_irn(out: Path) -> None:
    """IRNet: make_cam -> cam_to_ir_label -> make_sem_seg_labels on the fixtures."""
    import torch

    images = dict(zip(voc_ids(), fx.fixture_images()))
    install_shims(images)
    import step.cam_to_ir_label as s_ir
    import step.make_cam as s_cam
    import step.make_sem_seg_labels as s_rw

    scratch = Path(tempfile.mkdtemp(prefix="irn_parity_"))
    args = types.SimpleNamespace(
        num_workers=2,
        cam_out_dir=str(scratch / "cam"),
        ir_label_out_dir=str(scratch / "ir"),
        sem_seg_out_dir=str(scratch / "sem"),
        conf_fg_thres=IR_THRESHOLDS[0],
        conf_bg_thres=IR_THRESHOLDS[1],
        beta=RW["beta"],
        exp_times=RW["exp_times"],
        sem_seg_bg_thres=RW["sem_seg_bg_thres"],
    )
    for d in (args.cam_out_dir, args.ir_label_out_dir, args.sem_seg_out_dir):
        os.makedirs(d)

    model = reference_cam_model()
    with timed("IRNet make_cam"):
        s_cam._work(0, model, [msf_dataset(CAM_SCALES)], args)
    with timed("IRNet cam_to_ir_label"):
        s_ir._work(0, [image_dataset()], args)

    edge = reference_edge_model()
    s_rw.DataLoader = _scalar_size_loader(s_rw.DataLoader)
    with timed("IRNet make_sem_seg_labels"):
        s_rw._work(0, edge, [msf_dataset((1.0,))], args)

    arrays = {}
    with torch.no_grad():  # the boundary map itself, for a finer-grained check
        for n, name in enumerate(voc_ids()):
            pack = msf_dataset((1.0,))[n]
            e, _ = edge(torch.from_numpy(pack["img"]))
            arrays[f"irn/edge/{name}"] = e[0].numpy().astype(np.float32)
    for name, img in images.items():
        arrays[f"image/{name}"] = img
        cam = read_ref_cam(scratch / "cam" / f"{name}.npy")
        arrays[f"irn/cam_keys/{name}"] = cam["keys"].astype(np.int64)
        arrays[f"irn/cam/{name}"] = cam["cam"].astype(np.float32)
        arrays[f"irn/high_res/{name}"] = cam["high_res"].astype(np.float32)
        arrays[f"irn/ir_label/{name}"] = read_png(scratch / "ir" / f"{name}.png")
        arrays[f"irn/sem_seg/{name}"] = read_png(scratch / "sem" / f"{name}.png")
    np.savez_compressed(out, **arrays)


def part_deeplab(out: Path) -> None:
    """deeplab-pytorch: DeepLabV2_ResNet101_MSC logits (eval, max over 1.0/0.5/0.75) of the fixture."""
    import torch
    import torchvision
    from libs.models import DeepLabV2_ResNet101_MSC

    model = DeepLabV2_ResNet101_MSC(n_classes=fx.DEEPLAB_CLASSES)
    caffe = fx.deeplab_caffe_state()
    model.load_state_dict(caffe, strict=True)
    model.eval()
    img = fx.deeplab_image()
    mean_bgr = np.array([104.008, 116.669, 122.675])  # deeplab-pytorch configs/voc12.yaml IMAGE.MEAN
    x = (img[..., ::-1].astype(np.float64) - mean_bgr).astype(np.float32).transpose(2, 0, 1)[None]
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x)))
    n_params = sum(p.numel() for p in model.parameters())
    del torchvision
    np.savez_compressed(
        out, **{"deeplab/image": img, "deeplab/logits": logits[0].numpy(), "deeplab/num_params": np.int64(n_params)}
    )


def part_amn(out: Path, ir_golden: Path) -> None:
    """AMN: the CAM network's output and make_amn_cam (IR labels from the IRNet part as its seeds)."""
    import imageio
    import torch

    images = dict(zip(voc_ids(), fx.fixture_images()))
    install_shims(images)
    import net.resnet50_amn as amn_net
    import step.make_amn_cam as s_amn

    golden = np.load(ir_golden)
    scratch = Path(tempfile.mkdtemp(prefix="amn_parity_"))
    args = types.SimpleNamespace(
        num_workers=2, ir_label_out_dir=str(scratch / "ir"), amn_cam_out_dir=str(scratch / "cam")
    )
    os.makedirs(args.ir_label_out_dir)
    os.makedirs(args.amn_cam_out_dir)
    for name in images:
        imageio.imwrite(scratch / "ir" / f"{name}.png", golden[f"irn/ir_label/{name}"])

    state = our_amn_state()
    model = amn_net.CAM()
    model.resnet50.load_state_dict(backbone_to_resnet(state), strict=True)
    model.label_enc.weight.data.copy_(state["label_enc.weight"])
    model.label_enc.bias.data.copy_(state["label_enc.bias"])
    for i in range(4):
        getattr(model.classifier[1], f"c{i}").weight.data.copy_(state[f"head.branches.{i}.weight"])
        getattr(model.classifier[1], f"c{i}").bias.data.copy_(state[f"head.branches.{i}.bias"])
    model.eval()
    model.classifier[0].eval()  # AMN's Net.train() never reaches nn.Module.train: Dropout would stay on
    arrays = {}
    with torch.no_grad():
        name = voc_ids()[0]
        pack = msf_dataset((1.0,))[0]
        y = torch.from_numpy(multi_hot(fx.fixture_keys()[0]))[None].expand(2, fx.NUM_FG)
        arrays["amn/logits"] = model(torch.from_numpy(pack["img"]), y).numpy()
    s_amn._work(0, model, [msf_dataset(CAM_SCALES)], args)
    for name in images:
        cam = read_ref_cam(scratch / "cam" / f"{name}.npy")
        arrays[f"amn/cam/{name}"] = cam["cam"].astype(np.float32)
        arrays[f"amn/high_res/{name}"] = cam["high_res"].astype(np.float32)
    np.savez_compressed(out, **arrays)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--irn", type=Path, required=True, help="checkout of jiwoon-ahn/irn")
    p.add_argument("--deeplab", type=Path, required=True, help="checkout of kazuto1011/deeplab-pytorch")
    p.add_argument("--amn", type=Path, required=True, help="checkout of gaviotas/AMN")
    p.add_argument("--out", type=Path, default=REPO / "tests" / "golden" / "reference_parity.npz")
    p.add_argument("--part", choices=["irn", "deeplab", "amn"], help=argparse.SUPPRESS)
    p.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ir-golden", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        ref = {"irn": args.irn, "deeplab": args.deeplab, "amn": args.amn}[args.part]
        os.chdir(ref)
        sys.path.insert(0, str(ref.resolve()))
        {
            "irn": lambda: part_irn(args.part_out),
            "deeplab": lambda: part_deeplab(args.part_out),
            "amn": lambda: part_amn(args.part_out, args.ir_golden),
        }[args.part]()
        return
    scratch = Path(tempfile.mkdtemp(prefix="parity_"))
    base = [
        sys.executable,
        __file__,
        "--irn",
        str(args.irn.resolve()),
        "--deeplab",
        str(args.deeplab.resolve()),
        "--amn",
        str(args.amn.resolve()),
    ]
    parts = {}
    for part in ("irn", "deeplab", "amn"):
        parts[part] = scratch / f"{part}.npz"
        extra = ["--ir-golden", str(parts["irn"])] if part == "amn" else []
        print(f"== {part}", flush=True)
        subprocess.run([*base, "--part", part, "--part-out", str(parts[part]), *extra], check=True)
    merged = {}
    for path in parts.values():
        merged.update(dict(np.load(path)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **merged)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(merged)} arrays)")


if __name__ == "__main__":
    main()
