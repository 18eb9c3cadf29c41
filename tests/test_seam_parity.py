"""Parity of method seam with the official SEAM code, step by step, on identical inputs and weights.

tests/golden/seam_parity.npz holds what SEAM (https://github.com/YudeWang/SEAM at 3212261;
its copies of PSA's AffinityNet code, https://github.com/jiwoon-ahn/psa at 9493e59) computed
on the fixtures of tests/parity_fixtures.py (SEAM_SIZES, SEAM_CROP, AFF_SIZES; full-width
ResNet-38 with `fill_state_dict` weights), made by tools/make_seam_goldens.py, which runs
infer_SEAM.py, train_SEAM.py (one step) and infer_aff.py as shipped (its docstring lists
the shims; none of their code is in this project). Here the project's functions run on the
same fixtures with the official settings of config/voc12.yaml (`seam:`) and must agree
within the bounds of the fidelity issue: network outputs, CAMs, CRF scores and affinities
max abs diff <= 1e-4, pseudo-masks >= 99.9 % of pixels equal, the losses of one training
step within 1e-5.

One deliberate difference in the training step: Dropout2d is off in both (the golden's
Dropout2d.forward is the identity, here the modules are in eval mode), because random masks
have no fixed target; BatchNorm is frozen in both (the official Net.train(), seam.freeze_bn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import parity_fixtures as fx
import pytest
import torch
import torch.nn.functional as F

from conta_core.infra.config import REPO_ROOT, load_yaml

GOLDEN = Path(__file__).parent / "golden" / "seam_parity.npz"
CPU = torch.device("cpu")
SEAM_IDS = [f"2007_{i + 1:06d}" for i in range(len(fx.SEAM_SIZES))]
AFF_IDS = [f"2009_{i + 1:06d}" for i in range(len(fx.AFF_SIZES))]
CAM_PRED_ALPHA = 0.26  # infer_SEAM --out_cam_pred_alpha


def load_golden(path: Path = GOLDEN) -> dict[str, np.ndarray]:
    with np.load(path) as g:
        return {k: g[k] for k in g.files}


def official_cfg() -> dict:
    """The official settings (config/voc12.yaml's seam section)."""
    return load_yaml(REPO_ROOT / "config" / "voc12.yaml")["seam"]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_golden()


@pytest.fixture(scope="module")
def seam_cfg() -> dict:
    return official_cfg()


def build_seam_state(golden) -> dict[str, torch.Tensor]:
    """The recipe weights under the project's SEAMNet key names (asserted equal to the official Net's)."""
    from conta_core.models.seam import SEAMNet

    with torch.device("meta"):
        keys = SEAMNet(1.0, fx.NUM_FG + 1).state_dict()
    assert sorted(keys) == list(golden["seam/state_keys"])  # the official Net's names: same recipe weights
    return fx.fill_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in keys.items()})


@pytest.fixture(scope="module")
def seam_state(golden) -> dict[str, torch.Tensor]:
    return build_seam_state(golden)


def build_seam_net(state):
    from conta_core.models.seam import SEAMNet

    net = SEAMNet(1.0, fx.NUM_FG + 1)
    net.load_state_dict(state)
    return net


@pytest.fixture(scope="module")
def seam_net(seam_state):
    return build_seam_net(seam_state).eval()


def _images(golden, ids, images):
    out = dict(zip(ids, images))
    for name, img in out.items():  # the recipe still makes what the reference was fed
        np.testing.assert_array_equal(img, golden[f"image/{name}"])
    return out


def _x(img: np.ndarray) -> torch.Tensor:
    from conta_core.data.transforms import normalize

    return torch.from_numpy(normalize(img))[None]


def measure_network(golden, seam_net) -> float:
    """Max abs diff of cam and cam_rv (background + the image's classes; per-channel abs max of all 21)."""
    images = _images(golden, SEAM_IDS, fx.seam_images())
    worst = 0.0
    for name, keys in zip(SEAM_IDS, fx.seam_keys()):
        with torch.no_grad():
            cam, cam_rv = seam_net(_x(images[name]))
        channels = np.concatenate([[0], keys + 1])
        worst = max(
            worst,
            np.abs(cam[0, channels].numpy() - golden[f"seam/net_cam/{name}"]).max(),
            np.abs(cam_rv[0, channels].numpy() - golden[f"seam/net_cam_rv/{name}"]).max(),
            np.abs(cam[0].abs().amax(dim=(1, 2)).numpy() - golden[f"seam/net_cam_absmax/{name}"]).max(),
        )
    return float(worst)


def measure_cams(golden, seam_net, seam_cfg) -> tuple[float, float]:
    """(max abs diff of the normalised multi-scale CAMs, % pixels equal of the 0.26 CAM masks)."""
    from conta_core.evaluation.cam_eval import cam_label
    from conta_core.steps.seam import compute_seam_cam

    images = _images(golden, SEAM_IDS, fx.seam_images())
    worst, same, total = 0.0, 0, 0
    for name, keys in zip(SEAM_IDS, fx.seam_keys()):
        cam = compute_seam_cam(seam_net, images[name], keys, seam_cfg["cam_scales"], seam_cfg["cam_flip"], CPU)
        ref = golden[f"seam/cam/{name}"]
        assert cam.shape == ref.shape
        worst = max(worst, np.abs(cam - ref).max())
        pred = cam_label(cam, keys, CAM_PRED_ALPHA)  # out_cam_pred: class ids, 0 background
        same += int((pred == golden[f"seam/cam_pred/{name}"]).sum())
        total += pred.size
    return float(worst), 100.0 * same / total


def measure_crf(golden, seam_cfg) -> tuple[float, float, bool]:
    """(max abs diff of the la / ha CRF scores, % pixels equal of the affinity label maps,
    whether the pair labels of `aff_label_map` are identical)."""
    from conta_core.models.affinity import affinity_labels
    from conta_core.steps.seam import affinity_label, crf_scores

    images = {**_images(golden, SEAM_IDS, fx.seam_images()), **_images(golden, AFF_IDS, fx.aff_images())}
    cams = {name: golden[f"seam/cam/{name}"] for name in SEAM_IDS}  # infer_SEAM's own: the CRF step on its own
    cams.update(zip(AFF_IDS, fx.fixture_cams(fx.AFF_SIZES, fx.aff_keys())))  # with background
    worst, same, total = 0.0, 0, 0
    for name, cam in cams.items():
        la, ha = (crf_scores(images[name], cam, a, seam_cfg["crf"]) for a in seam_cfg["crf_alphas"])
        for alpha, scores in zip(seam_cfg["crf_alphas"], (la, ha)):
            worst = max(worst, np.abs(scores - golden[f"seam/crf_{alpha}/{name}"]).max())
        label = affinity_label(la, ha)
        same += int((label == golden[f"seam/aff_label/{name}"]).sum())
        total += label.size
    pairs = affinity_labels(fx.aff_label_map(), 5)
    pairs_equal = all(np.array_equal(o, golden[f"aff/pair_label_{k}"]) for k, o in zip(("bg", "fg", "neg"), pairs))
    return float(worst), 100.0 * same / total, pairs_equal


def measure_train_step(golden, seam_state, seam_cfg) -> tuple[dict[str, float], float, float]:
    """One train_SEAM step: ({loss term: abs diff}, max abs diff of the stored parameter updates,
    max relative diff of the per-parameter sums |update|); asserts the same parameters move."""
    from conta_core.data.transforms import normalize
    from conta_core.steps.seam import _freeze, _seam_step, adaptive_min_pooling_loss, make_optimizer

    net = _freeze(build_seam_net(seam_state), seam_cfg)  # the official train(): BN frozen, conv1a / b2* frozen
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout2d):
            m.eval()  # no fixed target for random masks (module docstring)
    images = fx.seam_train_images()
    labels = torch.zeros(len(images), fx.NUM_FG)
    for i, keys in enumerate(fx.seam_train_keys()):
        labels[i, keys] = 1.0
    batch = {"image": torch.from_numpy(np.stack([normalize(img) for img in images])), "label": labels}
    scale = float(seam_cfg["siamese_scale"])
    with torch.no_grad():  # the min-pooling and per-branch cls terms on their own
        x2 = F.interpolate(batch["image"], scale_factor=scale, mode="bilinear", align_corners=True)
        label = torch.cat([torch.ones(len(images), 1), labels], dim=1)[:, :, None, None]
        terms = {}
        for b, x in ((1, batch["image"]), (2, x2)):
            cam, cam_rv, logits = net(x, with_logits=True)
            terms[f"loss_rvmin{b}"] = adaptive_min_pooling_loss((cam_rv * label)[:, 1:]).item()
            terms[f"loss_cls{b}"] = F.multilabel_soft_margin_loss(logits[:, 1:], labels).item()
    optimizer = make_optimizer(net, float(seam_cfg["lr"]), seam_cfg)
    row = _seam_step(batch, 0, 0, model=net, optimizer=optimizer, max_step=1, cfg=seam_cfg, ctx=None, device=CPU)
    terms.update({k: row[k] for k in ("loss", "loss_cls", "loss_er", "loss_ecr")})
    diffs = {k: abs(v - float(golden[f"train/{k}"])) for k, v in terms.items()}

    # the SGD step: the official four groups, lr multipliers, weight decay, poly factor
    params = dict(net.named_parameters())
    assert sorted(params) == list(golden["train/param_keys"])
    sums = np.array([(params[k].detach() - seam_state[k]).double().abs().sum().item() for k in sorted(params)])
    ref = golden["train/update_abs_sum"]
    assert np.array_equal(sums == 0, ref == 0), "train_SEAM updates other parameters"
    moved = ref > 0
    rel = float((np.abs(sums - ref)[moved] / ref[moved]).max())
    worst = 0.0
    for key in (k.removeprefix("train/update/") for k in golden if k.startswith("train/update/")):
        ours = (params[key].detach() - seam_state[key]).flatten()[:256].numpy()
        worst = max(worst, float(np.abs(ours - golden[f"train/update/{key}"]).max()))
    return diffs, worst, rel


def measure_affinity(golden, aff_net, seam_cfg) -> tuple[float, float]:
    """(max abs diff of the dense affinity matrices, % pixels equal of the random-walk masks)."""
    from conta_core.models.affinity import walk_labels

    images = _images(golden, AFF_IDS, fx.aff_images())
    walk = seam_cfg["walk"]
    worst, same, total = 0.0, 0, 0
    for name, keys, cams in zip(AFF_IDS, fx.aff_keys(), fx.fixture_cams(fx.AFF_SIZES, fx.aff_keys())):
        x = _x(images[name])
        h, w = x.shape[-2:]
        with torch.no_grad():
            dense = aff_net(F.pad(x, (0, -(-w // 8) * 8 - w, 0, -(-h // 8) * 8 - h)), to_dense=True)
            ref = golden[f"aff/dense/{name}"]
            assert dense.shape == ref.shape
            worst = max(worst, np.abs(dense.numpy() - ref).max())
            idx = walk_labels(aff_net, x, torch.from_numpy(cams), walk["beta"], walk["logt"], walk["alpha"])
        mask = np.concatenate([[0], keys + 1])[idx.numpy()]
        same += int((mask == golden[f"aff/walk/{name}"]).sum())
        total += mask.size
    return float(worst), 100.0 * same / total


def build_aff_net(golden, seam_state):
    """AffinityNet with the recipe weights (the trunk and f8_3 / f8_4 shared with seam_state: same keys, same values)."""
    from conta_core.models.affinity import AffinityNet

    net = AffinityNet(1.0, 5)
    own = net.state_dict()
    assert sorted(own) == list(golden["aff/state_keys"])
    extra = fx.fill_state_dict({k: v for k, v in own.items() if k not in seam_state or v.shape != seam_state[k].shape})
    net.load_state_dict({**{k: seam_state[k] for k in own if k not in extra}, **extra})
    return net.eval()


@pytest.fixture(scope="module")
def aff_net(golden, seam_state):
    return build_aff_net(golden, seam_state)


def test_seam_network_matches_resnet38_seam(golden, seam_net) -> None:
    worst = measure_network(golden, seam_net)
    assert worst <= 1e-4, f"SEAM cam / cam_rv differ from the official Net's by up to {worst:.2e}"


def test_seam_cams_and_cam_pred_match_infer_seam(golden, seam_net, seam_cfg) -> None:
    worst, agree = measure_cams(golden, seam_net, seam_cfg)
    assert worst <= 1e-4, f"SEAM CAMs differ from infer_SEAM's by up to {worst:.2e}"
    assert agree >= 99.9, f"CAM pseudo-masks agree with out_cam_pred on {agree:.3f} % of pixels"


def test_crf_scores_and_affinity_labels_match_infer_seam_and_voc12_aff_dataset(golden, seam_cfg) -> None:
    worst, agree, pairs_equal = measure_crf(golden, seam_cfg)
    assert worst <= 1e-4, f"CRF scores differ from infer_SEAM's by up to {worst:.2e}"
    assert agree == 100.0, f"affinity label maps agree with VOC12AffDataset's on {agree:.3f} % of pixels"
    assert pairs_equal, "pair labels differ from ExtractAffinityLabelInRadius's"


def test_one_training_step_matches_train_seam(golden, seam_state, seam_cfg) -> None:
    diffs, update, rel = measure_train_step(golden, seam_state, seam_cfg)
    assert max(diffs.values()) <= 1e-5, f"loss terms differ from train_SEAM's: {diffs}"
    assert update <= 1e-6, f"parameter updates differ from train_SEAM's by up to {update:.2e}"
    assert rel <= 1e-4, f"per-parameter update sums differ from train_SEAM's by up to {rel:.2e} (relative)"


def test_affinity_and_random_walk_match_infer_aff(golden, aff_net, seam_cfg) -> None:
    worst, agree = measure_affinity(golden, aff_net, seam_cfg)
    assert worst <= 1e-4, f"AffinityNet's dense affinities differ from resnet38_aff's by up to {worst:.2e}"
    assert agree >= 99.9, f"random-walk masks agree with infer_aff's on {agree:.3f} % of pixels"
