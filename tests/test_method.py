"""The GLMC step against the method's formulas, computed independently in the test, on every device present."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glmc.losses import LossOptions, ce_loss, cumulative_alpha, glmc_loss, log_class_prior, negative_cosine
from glmc.mixing import HostMix, box_mask, cutmix_box, device_mix, draw_mix, epoch_mixes, local_mix, weight_pair
from utils.class_weights import class_balance_weights


class TinyNet(nn.Module):
    """Linear heads on flattened pixels: outputs are easy to recompute in the test."""

    def __init__(self, classes=3, dim=4, side=4):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * side * side, classes)
        self.fc_cb = nn.Linear(3 * side * side, classes)
        self.projection_head = nn.Linear(3 * side * side, dim)
        self.contrast_head = nn.Linear(dim, dim)

    def forward(self, x, train=False):
        f = x.flatten(1)
        z = self.projection_head(f)
        return self.fc(f), self.fc_cb(f), z, self.contrast_head(z)


def reference_loss(net, a1, a2, y, b1, b2, yb, lam, box, counts, gamma, alpha, cw, lam_local=None,
                   lam_global=None, log_prior=None, with_consistency=True):
    """The method's loss written out sample by sample, on the CPU whatever the inputs' device;
    box None means no local mix (x_l = a2)."""
    net = copy.deepcopy(net).cpu()
    a1, a2, y, b1, b2, yb = (t.cpu() for t in (a1, a2, y, b1, b2, yb))
    log_prior = None if log_prior is None else log_prior.cpu()
    lam_local = lam if lam_local is None else lam_local
    lam_global = lam if lam_global is None else lam_global
    x_g = lam_global * a1 + (1 - lam_global) * b1
    x_l = a2.clone()
    if box is None:
        lam_local = 1.0
    else:
        t, bo, l, r = box
        x_l[:, :, t:bo, l:r] = b2[:, :, t:bo, l:r]
    w = np.array(counts, dtype=float) ** -gamma
    w = torch.tensor(w / w.sum() * len(counts), dtype=torch.float32)
    C = len(counts)

    def labels(lmb, weighted):
        rows = []
        for i in range(len(y)):
            row = torch.zeros(C)
            row[y[i]] += lmb * (w[y[i]] if weighted else 1.0)
            row[yb[i]] += (1 - lmb) * (w[yb[i]] if weighted else 1.0)
            rows.append(row)
        return torch.stack(rows)

    def ce(logits, target):
        return torch.stack([-(target[i] * torch.log(torch.softmax(logits[i], 0))).sum() for i in range(len(y))]).mean()

    def s(p, z):
        return -torch.stack([torch.dot(p[i], z[i]) / (p[i].norm() * z[i].norm()) for i in range(len(y))]).mean()

    with torch.no_grad():
        o_g, c_g, z_g, p_g = net(x_g, train=True)
        o_l, c_l, z_l, p_l = net(x_l, train=True)
        if log_prior is not None:
            c_g, c_l = c_g + log_prior, c_l + log_prior
        balance = ce(o_g, labels(lam_global, False)) + ce(o_l, labels(lam_local, False))
        rebalance = ce(c_g, labels(lam_global, True)) + ce(c_l, labels(lam_local, True))
        consistency = s(p_g, z_l) + s(p_l, z_g) if with_consistency else torch.tensor(0.0)
    return alpha * balance + (1 - alpha) * rebalance + cw * consistency, balance, rebalance, consistency


@pytest.fixture
def batch(device):
    g = torch.Generator().manual_seed(1)
    a1, a2, b1, b2 = (torch.randn(5, 3, 4, 4, generator=g) for _ in range(4))
    parts = a1, a2, torch.tensor([0, 1, 2, 0, 1]), b1, b2, torch.tensor([2, 2, 1, 0, 0])
    return tuple(t.to(device) for t in parts)


def mix_of(lam, box, device):
    return device_mix(HostMix(lam, box), 4, 4, torch.device(device))


def pair(alpha, device):
    return weight_pair(alpha, torch.device(device))


def test_loss_equals_spec_formula(batch, device):
    net = TinyNet().to(device)
    counts, gamma, alpha, cw = [50, 10, 2], 1.2, 0.7, 4.0
    mix = mix_of(0.3, (1, 3, 0, 2), device)
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, gamma), pair(alpha, device),
                            LossOptions(cw))
    ref, bal, rebal, cons = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, gamma, alpha, cw)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert terms["balance"].item() == pytest.approx(bal.item(), rel=1e-5)
    assert terms["rebalance"].item() == pytest.approx(rebal.item(), rel=1e-5)
    assert terms["consistency"].item() == pytest.approx(cons.item(), rel=1e-5)


def test_paper_variants(batch, device):
    net = TinyNet().to(device)
    counts, mix = [50, 10, 2], mix_of(0.3, (1, 3, 0, 2), device)
    weights = class_balance_weights(counts, 1.2).to(device)
    area_lam = 1 - (2 * 2) / 16  # the pasted box covers 4 of 16 pixels
    loss, _ = glmc_loss(net, *batch, mix, weights, pair(0.7, device),
                        LossOptions(4.0, local_label_from_area=True))
    ref = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, 1.2, 0.7, 4.0, lam_local=area_lam)[0]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    summed, _ = glmc_loss(net, *batch, mix, weights, pair(0.7, device), LossOptions(4.0))
    meaned, _ = glmc_loss(net, *batch, mix, weights, pair(0.7, device),
                          LossOptions(4.0, mean_over_mixes=True))
    assert meaned.item() == pytest.approx(summed.item() / 2, rel=1e-5)


def test_inputs_are_not_modified(batch, device):
    copies = [t.clone() for t in batch]
    glmc_loss(TinyNet().to(device), *batch, mix_of(0.5, (0, 4, 0, 4), device), class_balance_weights([5, 3, 1], 1.0),
              pair(0.5, device))
    assert all(torch.equal(a, b) for a, b in zip(batch, copies))


def test_consistency_sends_no_gradient_into_z():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_consistency_gradient_on_projection_head_flows_through_p_only(batch, device):
    a1, a2, y, b1, b2, yb = batch
    box = (0, 2, 0, 2)
    net = TinyNet().to(device)
    loss, _ = glmc_loss(net, *batch, mix_of(0.4, box, device), class_balance_weights([3, 2, 1], 1.0), pair(0.5, device),
                        LossOptions(1.0))
    loss.backward()  # only the consistency term reaches the projection head
    ours = net.projection_head.weight.grad.clone()

    def projection_grad(stop_gradient):
        net.zero_grad()
        x_g = 0.4 * a1 + 0.6 * b1
        x_l = a2.clone()
        x_l[:, :, 0:2, 0:2] = b2[:, :, 0:2, 0:2]
        _, _, z_g, p_g = net(x_g, train=True)
        _, _, z_l, p_l = net(x_l, train=True)
        sg = (lambda t: t.detach()) if stop_gradient else (lambda t: t)
        cons = -F.cosine_similarity(p_g, sg(z_l)).mean() - F.cosine_similarity(p_l, sg(z_g)).mean()
        cons.backward()
        return net.projection_head.weight.grad.clone()

    assert torch.allclose(ours, projection_grad(stop_gradient=True), atol=1e-6)
    assert not torch.allclose(ours, projection_grad(stop_gradient=False), atol=1e-6)


@pytest.mark.parametrize("lam,cy,cx,box", [
    # half-side k = ceil(32 * sqrt(1 - lam)) // 2, worked out by hand
    (0.0, 16, 16, (0, 32, 0, 32)),  # k = 32 // 2 = 16
    (0.75, 16, 16, (8, 24, 8, 24)),  # 32 * 0.5 = 16, k = 8
    (0.5, 0, 0, (0, 11, 0, 11)),  # 32 * 0.7071 = 22.6 -> 23, k = 11, clipped at 0
    (0.9, 31, 5, (26, 32, 0, 10)),  # 32 * 0.3162 = 10.1 -> 11, k = 5, clipped at 32 and 0
    (0.37, 10, 28, (0, 23, 15, 32)),  # 32 * 0.7937 = 25.4 -> 26, k = 13
    (1.0, 3, 3, (3, 3, 3, 3)),  # k = 0: an empty box
    (1.0, 0, 0, (0, 0, 0, 0)),  # an empty box in the corner
])
def test_box_against_hand_values(lam, cy, cx, box):
    assert cutmix_box(32, 32, lam, cy, cx) == box


def test_mixes_are_fixed_once_made(device):
    host = HostMix(0.3, (1, 3, 0, 2))
    with pytest.raises(AttributeError):
        host.lam = 0.5
    with pytest.raises(AttributeError):
        mix_of(0.3, (1, 3, 0, 2), device).box = None


def test_drawn_boxes_stay_inside_and_lambda_is_uniform():
    rng = np.random.default_rng(0)
    lams = []
    for _ in range(2000):
        mix = draw_mix(rng, 32, 32)
        t, b, l, r = mix.box
        assert 0 <= t <= b <= 32 and 0 <= l <= r <= 32
        lams.append(mix.lam)
    assert abs(np.mean(lams) - 0.5) < 0.03 and abs(np.var(lams) - 1 / 12) < 0.01
    beta_lams = [draw_mix(rng, 32, 32, beta=0.5).lam for _ in range(2000)]
    assert abs(np.var(beta_lams) - 0.125) < 0.015  # Beta(0.5, 0.5) has variance 1/8


def test_same_seed_same_draws():
    a = [draw_mix(np.random.default_rng(7), 32, 32) for _ in range(3)]
    b = [draw_mix(np.random.default_rng(7), 32, 32) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("height,width", [(4, 4), (5, 3)])
def test_mask_blend_equals_box_pasting_for_every_box(device, height, width):
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randn(2, 3, height, width, generator=g).to(device) for _ in range(2))
    boxes = [(t, bo, l, r) for t in range(height + 1) for bo in range(t, height + 1)
             for l in range(width + 1) for r in range(l, width + 1)]
    for box in boxes:
        pasted = a.clone()
        pasted[:, :, box[0]:box[1], box[2]:box[3]] = b[:, :, box[0]:box[1], box[2]:box[3]]
        blended = local_mix(a, b, torch.tensor(box, device=device))
        assert torch.equal(blended, pasted), box
        assert int(box_mask(torch.tensor(box), height, width).sum()) == (box[1] - box[0]) * (box[3] - box[2])


def test_device_weights_round_like_python_floats(device):
    """w * x + (1 - w) * y with Python floats and with the (w, 1 - w) device pair: the same bits."""
    g = torch.Generator().manual_seed(4)
    a, b = (torch.randn(3, 3, 4, 4, generator=g).to(device) for _ in range(2))
    for lam in (0.1, 1 / 3, 0.7, 0.123456789):
        mix = mix_of(lam, (0, 2, 1, 3), device)
        assert torch.equal(mix.lam[0] * a + mix.lam[1] * b, lam * a + (1.0 - lam) * b)
        assert mix.lam.dtype == torch.float32 and mix.lam.device.type == torch.device(device).type
        kept = 1.0 - 4 / 16
        assert mix.area.tolist() == [np.float32(kept), np.float32(1.0 - kept)]


def test_epoch_mixes_are_a_function_of_seed_and_epoch():
    cpu = torch.device("cpu")
    first, again = epoch_mixes(7, 3, 20, 32, 32, None, cpu), epoch_mixes(7, 3, 20, 32, 32, None, cpu)
    other = epoch_mixes(7, 4, 20, 32, 32, None, cpu)
    assert torch.equal(first.lam, again.lam) and torch.equal(first.box, again.box)
    assert not torch.equal(first.lam, other.lam)
    # row s is the s-th draw of numpy's generator seeded with (seed, stream 5, epoch)
    rng = np.random.default_rng([7, 5, 3])
    draws = [draw_mix(rng, 32, 32) for _ in range(20)]
    assert first.box.tolist() == [list(d.box) for d in draws]
    assert first.lam[:, 0].tolist() == [np.float32(d.lam) for d in draws]
    step = first.step(5)
    assert step.box.tolist() == list(draws[5].box) and step.lam.shape == (2,)


def test_cumulative_alpha():
    assert cumulative_alpha(0, 200) == 1.0
    assert cumulative_alpha(100, 200) == pytest.approx(0.75)
    assert cumulative_alpha(199, 200) == pytest.approx(0.009975)  # 1 - 0.995 ** 2


def test_class_balance_weights():
    # gamma 1: n^-1 = 0.01, 0.1, 1 (sum 1.11), scaled to sum to 3 classes: 1/37, 10/37, 100/37
    assert torch.allclose(class_balance_weights([100, 10, 1], 1.0), torch.tensor([1 / 37, 10 / 37, 100 / 37]))
    # gamma 0 weighs every class 1; a class with no image gets 0 and the others share C
    assert class_balance_weights([7, 3], 0.0).tolist() == [1.0, 1.0]
    assert torch.allclose(class_balance_weights([4, 0, 1], 1.0), torch.tensor([0.6, 0.0, 2.4]))


ABLATION_CASES = {
    # switch: (LossOptions overrides, reference_loss overrides)
    "no_consistency": ({"consistency": False}, {"with_consistency": False}),
    "no_global_mix": ({"global_mix": False}, {"lam_global": 1.0}),
    "no_local_mix": ({"local_mix": False}, {"box": None}),
    "no_reweight": ({"reweight": False}, {"gamma": 0.0}),
}


@pytest.mark.parametrize("switch", list(ABLATION_CASES))
def test_each_ablation_changes_only_its_term(batch, switch, device):
    net = TinyNet().to(device)
    counts, mix = [50, 10, 2], mix_of(0.3, (1, 3, 0, 2), device)
    ours, ref_kw = ABLATION_CASES[switch]
    kw = dict(lam=0.3, box=(1, 3, 0, 2), counts=counts, gamma=1.2, alpha=0.7, cw=4.0)
    kw.update(ref_kw)
    ref, bal, rebal, cons = reference_loss(net, *batch, **kw)
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), pair(0.7, device),
                            LossOptions(4.0, **ours))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for name, value in (("balance", bal), ("rebalance", rebal), ("consistency", cons)):
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7)
    _, full = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), pair(0.7, device), LossOptions(4.0))
    changed = {k for k in ("balance", "rebalance", "consistency") if abs(full[k] - terms[k]) > 1e-7}
    expected = {"no_consistency": {"consistency"}, "no_reweight": {"rebalance"},
                "no_global_mix": {"balance", "rebalance", "consistency"},
                "no_local_mix": {"balance", "rebalance", "consistency"}}[switch]
    assert changed == expected


def test_log_prior_against_hand_values():
    # counts 3 and 1 of 4 images: log 0.75 and log 0.25; a class with no image counts as one
    assert torch.allclose(log_class_prior([3, 1]), torch.tensor([math.log(0.75), math.log(0.25)]))
    assert torch.allclose(log_class_prior([4, 0]), torch.tensor([math.log(0.8), math.log(0.2)]))


def test_balanced_softmax_shifts_only_the_rebalanced_logits(batch, device):
    net = TinyNet().to(device)
    counts, mix = [50, 10, 2], mix_of(0.3, (1, 3, 0, 2), device)
    prior = torch.log(torch.tensor([50.0, 10.0, 2.0]) / 62.0)
    assert torch.allclose(log_class_prior(counts), prior)
    ref, bal, rebal, _ = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, 1.2, 0.7, 4.0, log_prior=prior)
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), pair(0.7, device),
                            LossOptions(4.0, log_prior=log_class_prior(counts).to(device)))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert terms["rebalance"].item() == pytest.approx(rebal.item(), rel=1e-5)
    assert terms["balance"].item() == pytest.approx(bal.item(), rel=1e-5)


def test_ce_baseline_is_plain_cross_entropy_on_fc():
    class Heads(nn.Module):
        def forward(self, x, train=False, head="fc_cb"):
            assert head == "fc" and not train
            return x

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
                 + math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(3)))) / 2
    loss, terms = ce_loss(Heads(), logits, y)
    assert loss.item() == pytest.approx(expected, rel=1e-6) and set(terms) == {"loss"}


def test_fixed_alpha_replaces_the_cumulative_schedule():
    import argparse

    from main import epoch_alpha

    args = argparse.Namespace(method="glmc", fixed_alpha=None, epochs=10)
    assert epoch_alpha(args, 5) == pytest.approx(0.75)
    assert epoch_alpha(argparse.Namespace(method="glmc", fixed_alpha=1.0, epochs=10), 5) == 1.0
    assert epoch_alpha(argparse.Namespace(method="ce", fixed_alpha=None, epochs=10), 5) is None


def test_defaults_are_the_released_ones_and_options_are_fixed(batch, device):
    """contrast weight 4, the CutMix image labelled by lambda, the two mixes' losses summed."""
    net, counts = TinyNet().to(device), [50, 10, 2]
    loss, terms = glmc_loss(net, *batch, mix_of(0.3, (1, 3, 0, 2), device), class_balance_weights(counts, 1.2),
                            pair(0.7, device))
    ref, bal, rebal, cons = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, 1.2, 0.7, 4.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert set(terms) == {"loss", "balance", "rebalance", "consistency"}
    assert terms["loss"].item() == loss.item() and not terms["loss"].requires_grad
    with pytest.raises(AttributeError):  # frozen: a step cannot change the options of the next
        LossOptions().contrast_weight = 1.0


def test_loss_runs_the_networks_training_forward(device):
    """With a real network: the training forward (both heads, projection, prediction) is what the
    loss needs; the evaluation forward returns only the fc_cb logits."""
    from models import build_model

    torch.manual_seed(0)
    net = build_model("resnet32", 3, width=4).to(device)
    g = torch.Generator().manual_seed(2)
    a1, a2, b1, b2 = (torch.randn(5, 3, 8, 8, generator=g).to(device) for _ in range(4))
    y, y_b = torch.tensor([0, 1, 2, 0, 1], device=device), torch.tensor([2, 2, 1, 0, 0], device=device)
    mix = device_mix(HostMix(0.6, (2, 6, 1, 5)), 8, 8, torch.device(device))
    loss, terms = glmc_loss(net, a1, a2, y, b1, b2, y_b, mix, class_balance_weights([5, 3, 1], 1.2),
                            pair(0.5, device))
    loss.backward()
    assert net.projection_head[0].weight.grad.abs().sum() > 0 and net.fc_cb.weight.grad.abs().sum() > 0


def test_remaining_time_and_durations():
    from utils.progress import format_duration, remaining_time

    # 10 s for 5 steps: 2 s a step; 15 steps left of 20, then 3 more epochs of 20 steps
    assert remaining_time(10.0, 5, 15, 20, 3) == (30.0, 30.0 + 120.0)
    assert [format_duration(s) for s in (45, 200, 7500, 97200)] == ["45s", "3m20s", "2h05m", "1d03h"]
