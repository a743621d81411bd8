"""Learning rates per epoch as the optimizer sees them, typed from the released schedules."""
import pytest
import torch

from glmc.schedule import WarmupCosineFactor, build_scheduler, lr_factor


def rates(dataset: str, epochs: int, lr: float, **kw):
    """The learning rate of every epoch, read from the optimizer as training would."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = build_scheduler(optimizer, dataset, epochs, **kw)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "folder"])
def test_cifar_and_folder_data_follow_a_cosine_from_the_base_rate(dataset):
    lr = rates(dataset, 200, 0.01)
    # 0.01 * 0.5 * (1 + cos(pi * e / 200)) for e = 0, 1, 50, 100, 199
    expected = {0: 0.01, 1: 0.009999383162, 50: 0.008535533906, 100: 0.005, 199: 6.168375917e-07}
    assert {e: lr[e] for e in expected} == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dataset,epochs", [("ImageNet-LT", 135), ("iNaturelist2018", 120)])
def test_imagenet_and_inat_warm_up_one_epoch_late_by_default(dataset, epochs):
    lr = rates(dataset, epochs, 0.1)
    assert lr[:4] == pytest.approx([0.1, 0.01, 0.02, 0.03]) and lr[11] == pytest.approx(0.11)
    on_time = rates(dataset, epochs, 0.1, late_warmup=False)
    assert on_time[:3] == pytest.approx([0.01, 0.02, 0.03])


def test_factor_defaults_are_the_released_late_warm_up():
    assert WarmupCosineFactor(135)(1) == pytest.approx(0.1)
    assert lr_factor("ImageNet-LT", 135)(1) == pytest.approx(0.1)
    assert lr_factor("cifar10", 200)(1) == pytest.approx(0.9999383162)
