"""The fixture recipe of the reference-parity goldens (tests/test_parity.py, tools/make_parity_goldens.py;
tests/test_seam_parity.py, tools/make_seam_goldens.py).

Everything the reference code and this project are both fed is made here from fixed seeds with
numpy's PCG64 generator (stable across numpy versions and machines), so the golden file only
has to hold the reference's OUTPUTS and the inputs it was fed:

- `fixture_images()`: 8 RGB images uint8[H, W, 3], sizes below; four have sides that are not
  multiples of 16 (the sizes where IRNet's upsample-and-crop and 16-aligned high_res matter).
- `fixture_keys()`: 0-based foreground classes (1 to 3 of VOC's 20) per image.
- `fill_state_dict(state, seed)`: deterministic weights for any state_dict, each tensor drawn
  from its own generator seeded by (seed, crc32(key)), so the values depend only on the key
  name: He-normal convolutions, BatchNorm with random running statistics and affine terms,
  the last BatchNorm of each bottleneck damped (x 0.2) so that activations stay bounded through
  ResNet-101 at random init, DeepLab's ASPP damped (x 0.05) so that its logits are O(10).
- `torchvision_to_caffe(state)`: torchvision ResNet key names -> deeplab-pytorch's caffe
  layout (`layer2.block1.reduce.conv.weight`, ...). Written independently of
  conta_core.models.backbone.caffe_to_torchvision, so the parity test also tests that mapping.
- SEAM / AffinityNet (`seam_images`, `seam_train_images`, `aff_images` and their keys,
  `fixture_cams`: smooth CAM-like maps in [0, 1], `aff_label_map`: a stride-8 label with
  unknown (255) blocks): small images, because the networks are the full-width ResNet-38.
No code of the reference repositories is used here.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

IMAGE_SIZES = [(150, 133), (141, 160), (160, 117), (125, 147), (128, 128), (112, 96), (97, 131), (160, 160)]
NUM_FG = 20  # VOC: the reference CAM / AMN networks hard-code 20 classes
DEEPLAB_SIZE = (160, 161)  # the DeepLab MSC input: at H = 160 the ceil-mode stem pool gives one row more
DEEPLAB_CLASSES = 21
WEIGHT_SEED = 2020
IMAGE_SEED = 7


def fixture_images(seed: int = IMAGE_SEED, sizes: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Smooth textured scenes with 1-3 coloured ellipses: uint8[H, W, 3] per IMAGE_SIZES (or `sizes`)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for h, w in IMAGE_SIZES if sizes is None else sizes:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        base = rng.uniform(40, 200, 3)
        grad = rng.uniform(-60, 60, (2, 3))
        img = base + (yy / h)[..., None] * grad[0] + (xx / w)[..., None] * grad[1]
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[inside] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return out


def fixture_keys(seed: int = IMAGE_SEED, n: int | None = None) -> list[np.ndarray]:
    """Sorted 0-based foreground classes of each fixture image (1 to 3 of NUM_FG); n images (default all)."""
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    return [
        np.sort(rng.choice(NUM_FG, size=int(rng.integers(1, 4)), replace=False)).astype(np.int64)
        for _ in range(len(IMAGE_SIZES) if n is None else n)
    ]


def deeplab_image(seed: int = IMAGE_SEED) -> np.ndarray:
    """The DeepLab fixture: uint8[160, 161, 3]."""
    rng = np.random.Generator(np.random.PCG64(seed + 2))
    return rng.integers(0, 256, (*DEEPLAB_SIZE, 3), dtype=np.uint8)


def _tensor_for(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode())]))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.1, shape)
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape)
    if len(shape) == 4:  # conv: He normal (ASPP x 0.05: logits O(10), so 1e-4 is a float32-meaningful bound)
        fan_in = shape[1] * shape[2] * shape[3]
        return rng.normal(0.0, np.sqrt(2.0 / fan_in) * (0.05 if key.startswith("aspp.") else 1.0), shape)
    if len(shape) == 2:  # linear
        return rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
    if leaf == "weight":  # BatchNorm / GroupNorm scale
        damp = 0.2 if ".bn3." in f".{key}" else 1.0
        return rng.uniform(0.5, 1.0, shape) * damp
    return rng.normal(0.0, 0.05, shape)  # biases


def fill_state_dict(state: dict[str, torch.Tensor], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """A state_dict with the keys, shapes and dtypes of `state`, values from the recipe."""
    out = {}
    for key, ref in state.items():
        value = _tensor_for(key, tuple(ref.shape), seed)
        out[key] = torch.from_numpy(np.asarray(value)).to(ref.dtype).reshape(ref.shape)
    return out


_BRANCH = {
    "conv1": "reduce.conv",
    "bn1": "reduce.bn",
    "conv2": "conv3x3.conv",
    "bn2": "conv3x3.bn",
    "conv3": "increase.conv",
    "bn3": "increase.bn",
    "downsample.0": "shortcut.conv",
    "downsample.1": "shortcut.bn",
}


def torchvision_to_caffe(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """torchvision ResNet keys -> deeplab-pytorch caffe-layout keys (fc.* dropped)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "fc":
            continue
        if parts[0] in ("conv1", "bn1"):
            new = f"layer1.conv1.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"
        else:
            layer, block = int(parts[0][len("layer") :]), int(parts[1])
            if parts[2] == "downsample":
                module, leaf = f"downsample.{parts[3]}", parts[4]
            else:
                module, leaf = parts[2], parts[3]
            new = f"layer{layer + 1}.block{block + 1}.{_BRANCH[module]}.{leaf}"
        out[prefix + new] = value
    return out


def deeplab_torchvision_state(seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Recipe weights of a ResNet-101 backbone under torchvision's key names (fc left out)."""
    import torchvision

    state = {
        k: v for k, v in torchvision.models.resnet101(weights=None).state_dict().items() if not k.startswith("fc.")
    }
    return fill_state_dict(state, seed)


def deeplab_aspp_state(seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Recipe weights of DeepLab-v2's 4 ASPP branches (2048 -> 21 channels) under this project's names."""
    shapes = {}
    for i in range(4):
        shapes[f"aspp.branches.{i}.weight"] = torch.empty(DEEPLAB_CLASSES, 2048, 3, 3)
        shapes[f"aspp.branches.{i}.bias"] = torch.empty(DEEPLAB_CLASSES)
    return fill_state_dict(shapes, seed)


def deeplab_caffe_state(seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """The recipe weights as a deeplab-pytorch DeepLabV2_ResNet101_MSC state_dict ("base." keys)."""
    out = torchvision_to_caffe(deeplab_torchvision_state(seed), prefix="base.")
    for key, value in deeplab_aspp_state(seed).items():
        i, leaf = key.split(".")[2:]
        out[f"base.aspp.c{i}.{leaf}"] = value
    return out


# --- SEAM / AffinityNet (tests/test_seam_parity.py, tools/make_seam_goldens.py) -----------------
# Small inputs: the networks are the full-width ResNet-38 (about 105 M parameters), on a CPU.

SEAM_SEED = IMAGE_SEED + 10
SEAM_SIZES = [(41, 53), (48, 36)]  # infer_SEAM multi-scale CAMs, CRF labels; 41 * 0.5 and 53 * 0.5 round half to even
SEAM_CROP = 64  # the train_SEAM step: a batch of 2 images of 64 x 64 (0.3 x 64 -> 19 px siamese branch)
AFF_SIZES = [(90, 101), (96, 88)]  # infer_aff: padded to 96 x 104 / 96 x 88 -> 12 x 13 / 12 x 11 features, radius 5
AFF_LABEL_SIZE = 12  # ExtractAffinityLabelInRadius on a 12 x 12 label (its crops are square)


def seam_images() -> list[np.ndarray]:
    """uint8[H, W, 3] per SEAM_SIZES."""
    return fixture_images(SEAM_SEED, SEAM_SIZES)


def seam_keys() -> list[np.ndarray]:
    """0-based foreground classes of the SEAM_SIZES images."""
    return fixture_keys(SEAM_SEED, len(SEAM_SIZES))


def seam_train_images() -> list[np.ndarray]:
    """The train_SEAM batch: 2 images uint8[SEAM_CROP, SEAM_CROP, 3]."""
    return fixture_images(SEAM_SEED + 1, [(SEAM_CROP, SEAM_CROP)] * 2)


def seam_train_keys() -> list[np.ndarray]:
    return fixture_keys(SEAM_SEED + 1, 2)


def aff_images() -> list[np.ndarray]:
    """uint8[H, W, 3] per AFF_SIZES."""
    return fixture_images(SEAM_SEED + 2, AFF_SIZES)


def aff_keys() -> list[np.ndarray]:
    return fixture_keys(SEAM_SEED + 2, len(AFF_SIZES))


def fixture_cams(sizes: list[tuple[int, int]], keys: list[np.ndarray], seed: int = SEAM_SEED + 3) -> list[np.ndarray]:
    """Smooth CAM-like maps float32[K, H, W] in [0, 1] per image: one or two Gaussian blobs per class."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for (h, w), k in zip(sizes, keys):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        maps = np.zeros((len(k), h, w))
        for c in range(len(k)):
            for _ in range(int(rng.integers(1, 3))):
                cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
                sy, sx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
                blob = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
                maps[c] = np.maximum(maps[c], rng.uniform(0.5, 1.0) * blob)
        out.append(maps.astype(np.float32))
    return out


def aff_label_map(seed: int = SEAM_SEED + 4) -> np.ndarray:
    """uint8[AFF_LABEL_SIZE, AFF_LABEL_SIZE] stride-8 affinity label: blocks of 0 (bg), 1, 2 and 255 (unknown)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    coarse = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(4, 4), p=[0.4, 0.25, 0.2, 0.15])
    return np.kron(coarse, np.ones((3, 3), np.uint8))
