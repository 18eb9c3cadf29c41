"""conta_core.models.resnet builds torchvision's ResNets without importing torchvision: the same
state_dict keys and order, bit-identical random weights for the same seed (module creation and
initialisation in torchvision's order), the same forward, the same strided backbones."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from conta_core.models.backbone import build_torchvision_resnet
from conta_core.models.resnet import DEPTHS, resnet


@pytest.mark.parametrize("name", list(DEPTHS))
def test_same_seed_gives_torchvisions_weights_and_forward(name: str) -> None:
    torch.manual_seed(3)
    ours = resnet(name)
    torch.manual_seed(3)
    ref = getattr(torchvision.models, name)(weights=None)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)  # keys and their order
    assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    x = torch.randn(2, 3, 64, 64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_backbone_strides_match_torchvision_built_the_same_way() -> None:
    """The dilated, stride-8 caffe-style backbone (DeepLab-v2's) from either network computes the
    same features: the style and stride edits act on module attributes both have."""
    ref = torchvision.models.resnet50(weights=None)
    net = build_torchvision_resnet("resnet50", output_stride=8, dilate=True, style="caffe")
    net.load_state_dict(ref.state_dict())
    ref.maxpool.ceil_mode = True
    for layer, d in ((ref.layer3, 2), (ref.layer4, 4)):
        layer[0].conv2.stride, layer[0].downsample[0].stride = (1, 1), (1, 1)
        for m in layer.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
                m.dilation, m.padding = (d, d), (d, d)
    for layer in (ref.layer2,):  # caffe style: the stride moves to the 1x1 reduce conv
        layer[0].conv1.stride, layer[0].conv2.stride = layer[0].conv2.stride, (1, 1)
    x = torch.randn(1, 3, 65, 65)
    net.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(_stages(net, x), _stages(ref, x))


def _stages(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))


def test_a_jobs_setup_imports_neither_torchvision_nor_dynamo() -> None:
    """The point of the module (and of device._deterministic_algorithms): a workflow job that
    seeds, imports the steps and builds a ResNet skips the imports of torchvision and
    torch._dynamo, about 1.7 s and 1.1 s per job on a 2-core CPU."""
    code = (
        "import sys, torch; import conta_core.steps.cam, conta_core.steps.segment; "
        "from conta_core.infra.device import seed_everything; "
        "from conta_core.models.backbone import build_torchvision_resnet; "
        "seed_everything(0); build_torchvision_resnet('resnet50', 16, False); "
        "assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled(); "
        "late = [m for m in ('torchvision', 'torch._dynamo', 'torch._inductor.config') if m in sys.modules]; "
        "assert not late, late"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
