"""The GLMC step against SPEC §5 computed independently in the test."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.losses import (LossOptions, ce_loss, class_balance_weights, cumulative_alpha, glmc_loss, log_class_prior,
                          negative_cosine)
from utils.mixing import Mix, cutmix_box, draw_mix


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
    """SPEC §5 written out sample by sample; box None means no local mix (x_l = a2)."""
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
def batch():
    g = torch.Generator().manual_seed(1)
    a1, a2, b1, b2 = (torch.randn(5, 3, 4, 4, generator=g) for _ in range(4))
    return a1, a2, torch.tensor([0, 1, 2, 0, 1]), b1, b2, torch.tensor([2, 2, 1, 0, 0])


def test_loss_equals_spec_formula(batch):
    net = TinyNet()
    counts, gamma, alpha, cw = [50, 10, 2], 1.2, 0.7, 4.0
    mix = Mix(0.3, (1, 3, 0, 2))
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, gamma), alpha, LossOptions(cw))
    ref, bal, rebal, cons = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, gamma, alpha, cw)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert terms["balance"].item() == pytest.approx(bal.item(), rel=1e-5)
    assert terms["rebalance"].item() == pytest.approx(rebal.item(), rel=1e-5)
    assert terms["consistency"].item() == pytest.approx(cons.item(), rel=1e-5)


def test_paper_variants(batch):
    net = TinyNet()
    counts, mix = [50, 10, 2], Mix(0.3, (1, 3, 0, 2))
    weights = class_balance_weights(counts, 1.2)
    area_lam = 1 - (2 * 2) / 16  # the pasted box covers 4 of 16 pixels
    loss, _ = glmc_loss(net, *batch, mix, weights, 0.7, LossOptions(4.0, local_label_from_area=True))
    ref = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, 1.2, 0.7, 4.0, lam_local=area_lam)[0]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    summed, _ = glmc_loss(net, *batch, mix, weights, 0.7, LossOptions(4.0))
    meaned, _ = glmc_loss(net, *batch, mix, weights, 0.7, LossOptions(4.0, mean_over_mixes=True))
    assert meaned.item() == pytest.approx(summed.item() / 2, rel=1e-5)


def test_inputs_are_not_modified(batch):
    copies = [t.clone() for t in batch]
    glmc_loss(TinyNet(), *batch, Mix(0.5, (0, 4, 0, 4)), class_balance_weights([5, 3, 1], 1.0), 0.5)
    assert all(torch.equal(a, b) for a, b in zip(batch, copies))


def test_consistency_sends_no_gradient_into_z():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_consistency_gradient_on_projection_head_flows_through_p_only(batch):
    a1, a2, y, b1, b2, yb = batch
    box = (0, 2, 0, 2)
    net = TinyNet()
    loss, _ = glmc_loss(net, *batch, Mix(0.4, box), class_balance_weights([3, 2, 1], 1.0), 0.5, LossOptions(1.0))
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


@pytest.mark.parametrize("lam,cy,cx", [(0.0, 16, 16), (0.5, 0, 0), (0.9, 31, 5), (0.37, 10, 28), (1.0, 3, 3)])
def test_box_follows_formula(lam, cy, cx):
    k = math.ceil(32 * math.sqrt(1 - lam)) // 2
    expected = (max(cy - k, 0), min(cy + k, 32), max(cx - k, 0), min(cx + k, 32))
    assert cutmix_box(32, 32, lam, cy, cx) == expected


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


def test_cumulative_alpha():
    assert cumulative_alpha(0, 200) == 1.0
    assert cumulative_alpha(100, 200) == pytest.approx(0.75)
    assert cumulative_alpha(199, 200) == pytest.approx(1 - (199 / 200) ** 2)


def test_class_balance_weights():
    w = class_balance_weights([100, 10, 1], 1.2)
    raw = np.array([100 ** -1.2, 10 ** -1.2, 1.0])
    assert torch.allclose(w, torch.tensor(raw / raw.sum() * 3, dtype=torch.float32))


ABLATION_CASES = {
    # switch: (LossOptions overrides, reference_loss overrides)
    "no_consistency": ({"consistency": False}, {"with_consistency": False}),
    "no_global_mix": ({"global_mix": False}, {"lam_global": 1.0}),
    "no_local_mix": ({"local_mix": False}, {"box": None}),
    "no_reweight": ({"reweight": False}, {"gamma": 0.0}),
}


@pytest.mark.parametrize("switch", list(ABLATION_CASES))
def test_each_ablation_changes_only_its_term(batch, switch):
    net = TinyNet()
    counts, mix = [50, 10, 2], Mix(0.3, (1, 3, 0, 2))
    ours, ref_kw = ABLATION_CASES[switch]
    kw = dict(lam=0.3, box=(1, 3, 0, 2), counts=counts, gamma=1.2, alpha=0.7, cw=4.0)
    kw.update(ref_kw)
    ref, bal, rebal, cons = reference_loss(net, *batch, **kw)
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), 0.7, LossOptions(4.0, **ours))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for name, value in (("balance", bal), ("rebalance", rebal), ("consistency", cons)):
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7)
    _, full = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), 0.7, LossOptions(4.0))
    changed = {k for k in ("balance", "rebalance", "consistency") if abs(full[k] - terms[k]) > 1e-7}
    expected = {"no_consistency": {"consistency"}, "no_reweight": {"rebalance"},
                "no_global_mix": {"balance", "rebalance", "consistency"},
                "no_local_mix": {"balance", "rebalance", "consistency"}}[switch]
    assert changed == expected


def test_balanced_softmax_shifts_only_the_rebalanced_logits(batch):
    net = TinyNet()
    counts, mix = [50, 10, 2], Mix(0.3, (1, 3, 0, 2))
    prior = torch.log(torch.tensor([50.0, 10.0, 2.0]) / 62.0)
    assert torch.allclose(log_class_prior(counts), prior)
    ref, bal, rebal, _ = reference_loss(net, *batch, 0.3, (1, 3, 0, 2), counts, 1.2, 0.7, 4.0, log_prior=prior)
    loss, terms = glmc_loss(net, *batch, mix, class_balance_weights(counts, 1.2), 0.7,
                            LossOptions(4.0, log_prior=log_class_prior(counts)))
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
