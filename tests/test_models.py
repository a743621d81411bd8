import pytest
import torch

from models import build_model, count_parameters
from tests.conftest import released_layout

CIFAR_ARCHS = ["resnet32/10", "resnet32/100", "resnet18/100", "resnet34/100", "resnet50/10"]


@pytest.fixture(scope="module")
def layout():
    return released_layout()


@pytest.mark.parametrize("entry", CIFAR_ARCHS)
def test_state_dict_matches_released_layout(layout, entry):
    arch, classes = entry.split("/")
    model = build_model(arch, int(classes))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == layout[entry]["state_dict"]
    assert count_parameters(model) == layout[entry]["params"]


def test_resnet32_width16_is_the_standard_network():
    model = build_model("resnet32", 10, width=16)
    backbone = sum(p.numel() for n, p in model.named_parameters()
                   if not n.startswith(("fc", "projection_head", "contrast_head")))
    # 16/32/64 channels: the 0.46 M-parameter ResNet-32 of He et al. without its classifier.
    assert 460_000 < backbone < 470_000
    assert model.fc.in_features == 64 and model.projection_head[0].out_features == 128


@pytest.mark.parametrize("arch,head", [("resnet32", 128), ("resnet18", 256)])
def test_training_and_evaluation_forward(arch, head, device):
    model = (build_model(arch, 7, width=16) if arch == "resnet32" else build_model(arch, 7)).to(device)
    x = torch.randn(3, 3, 32, 32, device=device)
    model.eval()
    logits, logits_cb, z, p = model(x, train=True)
    assert logits.shape == logits_cb.shape == (3, 7) and z.shape == p.shape == (3, head)
    assert torch.allclose(model(x), logits_cb, atol=1e-5)  # evaluation uses fc_cb only
    assert torch.allclose(p, model.contrast_head(z), atol=1e-5)


def test_unknown_arch_and_width_misuse():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="resnet32 only"):
        build_model("resnet18", 10, width=16)
