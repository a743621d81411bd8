"""The GLMC objective: `glmc_loss` reads like the method's steps (mix, label, both heads, consistency, weighting)."""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from glmc.mixing import Mix, global_mix, local_mix


@dataclass(frozen=True)
class LossOptions:
    """Released behaviour by default.

    `local_label_from_area` and `mean_over_mixes` are the paper's variants (the released code
    labels the CutMix image with lambda and sums the two mixes' losses).
    The ablation switches each turn one part off and nothing else: without the global
    (local) mix that branch sees its plain view with its own label; without
    consistency or re-weighting that term is dropped or uses the plain soft labels.
    `log_prior` (balanced softmax) shifts the `fc_cb` logits of the re-balanced term.
    """

    contrast_weight: float = 4.0
    local_label_from_area: bool = False
    mean_over_mixes: bool = False
    global_mix: bool = True
    local_mix: bool = True
    consistency: bool = True
    reweight: bool = True
    log_prior: Optional[torch.Tensor] = None


def cumulative_alpha(epoch: int, epochs: int) -> float:
    """alpha = 1 - (epoch / epochs) ** 2, epoch counted from 0, as in the released code."""
    return 1.0 - (epoch / epochs) ** 2


def evaluation_head(method: str, fixed_alpha: Optional[float], epochs: int) -> Tuple[str, str]:
    """(head, why): the classifier the objective trains, which every evaluation of the run uses.

    `fc_cb` for GLMC, as released. `fc` for the CE baseline, and whenever the re-balanced term's weight
    1 - alpha is 0 in every epoch, so that `fc_cb` receives no gradient (weight decay only): --fixed_alpha 1,
    or a one-epoch run of the cumulative schedule (alpha = 1 - (0/1)^2 = 1).
    """
    if method == "ce":
        return "fc", "the CE baseline trains fc only"
    if fixed_alpha is not None and fixed_alpha == 1.0:
        return "fc", "--fixed_alpha 1 gives the re-balanced term weight 0, so fc_cb is never trained"
    if fixed_alpha is None and epochs == 1:
        return "fc", "in a one-epoch run alpha = 1 - (0/1)^2 = 1, so fc_cb is never trained"
    return "fc_cb", "GLMC's re-balanced classifier, as released"


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c t_c log softmax(logits)_c, in fp32."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """S(p, z) = -mean cosine(p, stop_gradient(z)), in fp32."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def mixed_label(e_a: torch.Tensor, e_b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """weights[0] * e_a + weights[1] * e_b, with weights = (w, 1 - w)."""
    return weights[0] * e_a + weights[1] * e_b


def glmc_loss(model: nn.Module, a1: torch.Tensor, a2: torch.Tensor, y: torch.Tensor,
              b1: torch.Tensor, b2: torch.Tensor, y_b: torch.Tensor, mix: Mix,
              class_weights: torch.Tensor, alpha: torch.Tensor,
              opts: LossOptions = LossOptions()) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """One GLMC step's loss. (a1, a2, y): original views and labels; (b1, b2, y_b): partner's;
    `alpha` holds (alpha, 1 - alpha) on the device (see `glmc.mixing.weight_pair`)."""
    x_g = global_mix(a1, b1, mix.lam) if opts.global_mix else a1
    x_l = local_mix(a2, b2, mix.box) if opts.local_mix else a2

    num_classes = class_weights.numel()
    e, e_b = F.one_hot(y, num_classes).float(), F.one_hot(y_b, num_classes).float()
    w = class_weights.to(e.device) if opts.reweight else torch.ones_like(class_weights, device=e.device)
    ew, ew_b = w[y, None] * e, w[y_b, None] * e_b
    local_weights = mix.area if opts.local_label_from_area else mix.lam
    t_g, tw_g = (mixed_label(e, e_b, mix.lam), mixed_label(ew, ew_b, mix.lam)) if opts.global_mix else (e, ew)
    t_l, tw_l = ((mixed_label(e, e_b, local_weights), mixed_label(ew, ew_b, local_weights)) if opts.local_mix
                 else (e, ew))

    o_g, c_g, z_g, p_g = model(x_g, train=True)
    o_l, c_l, z_l, p_l = model(x_l, train=True)
    if opts.log_prior is not None:
        c_g, c_l = c_g + opts.log_prior, c_l + opts.log_prior

    balance = soft_cross_entropy(o_g, t_g) + soft_cross_entropy(o_l, t_l)
    rebalance = soft_cross_entropy(c_g, tw_g) + soft_cross_entropy(c_l, tw_l)
    consistency = negative_cosine(p_g, z_l) + negative_cosine(p_l, z_g) if opts.consistency else balance.new_zeros(())
    if opts.mean_over_mixes:
        balance, rebalance, consistency = balance / 2, rebalance / 2, consistency / 2

    loss = alpha[0] * balance + alpha[1] * rebalance + opts.contrast_weight * consistency
    return loss, {"loss": loss.detach(), "balance": balance.detach(), "rebalance": rebalance.detach(),
                  "consistency": consistency.detach()}


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The plain cross-entropy baseline on `fc`: one view, no mixing, no second loader."""
    loss = F.cross_entropy(model(x, head="fc").float(), y)
    return loss, {"loss": loss.detach()}


def log_class_prior(counts: Sequence[int]) -> torch.Tensor:
    """log(n_c / N), the balanced-softmax shift (Ren et al. 2020)."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    return torch.log(n / n.sum()).float()
