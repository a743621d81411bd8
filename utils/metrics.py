"""Evaluation figures as in the released code: top-k per sample, per-class accuracy, shot groups."""
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.distributed import World, gather_objects

SHOT_RULES = {
    "released": "many > 100, few <= 20 training images (released code)",
    "common": "many > 100, few < 20 training images (Kang et al. 2020)",
}


def shot_groups(train_counts: Sequence[int], rule: str = "released") -> Dict[str, List[int]]:
    """Class indices of the many/medium/few-shot groups under `rule`."""
    if rule not in SHOT_RULES:
        raise ValueError(f"unknown shot rule {rule!r}; expected one of {list(SHOT_RULES)}")
    few_limit = 20 if rule == "released" else 19
    groups: Dict[str, List[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(train_counts):
        key = "many" if n > 100 else "few" if n <= few_limit else "medium"
        groups[key].append(c)
    return groups


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, k: int = 5, head: str = "fc_cb",
            logit_shift: Optional[torch.Tensor] = None, also: Sequence[str] = (),
            memory_format: torch.memory_format = torch.contiguous_format):
    """(top-k predictions, targets, {head: top-1 predictions} for each head in `also`) over the whole loader,
    with the evaluation forward of `head` and `logit_shift` added to its logits (post-hoc logit adjustment).
    The heads in `also` share the backbone pass: each costs one matrix product more. No host sync per batch:
    the predictions stay on the device until the loader is done. `memory_format`: the training's (a
    channels_last network is fed channels_last images)."""
    model.eval()
    preds, targets, others = [], [], {h: [] for h in also}
    for batch in loader:
        if batch is None:  # every image of the batch was undecodable and skipped
            continue
        images, labels = batch
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        outputs = model(images, head=(head, *also) if also else head)
        logits, extra = (outputs[0], outputs[1:]) if also else (outputs, ())
        if logit_shift is not None:
            logits = logits.float() + logit_shift.to(logits.device)
        preds.append(logits.float().topk(min(k, logits.shape[1]), dim=1).indices)
        targets.append(labels)
        for h, out in zip(also, extra):
            others[h].append(out.float().argmax(dim=1))
    return (torch.cat(preds).cpu(), torch.cat(targets).cpu(),
            {h: torch.cat(p).cpu() for h, p in others.items()})


def summarize(topk_preds: torch.Tensor, targets: torch.Tensor, train_counts: Sequence[int],
              rule: str = "released") -> Dict:
    """top1/top5 over samples, per-class accuracy and group means (None for an empty group), in %."""
    num_classes = len(train_counts)
    correct1 = topk_preds[:, 0] == targets
    correct5 = (topk_preds == targets[:, None]).any(dim=1)
    seen = torch.bincount(targets, minlength=num_classes).double()
    hits = torch.bincount(targets[correct1], minlength=num_classes).double()
    per_class = torch.where(seen > 0, 100.0 * hits / seen.clamp(min=1), torch.full_like(seen, float("nan")))
    groups = shot_groups(train_counts, rule)

    def group_mean(classes: List[int]) -> Optional[float]:
        vals = per_class[classes]
        vals = vals[~vals.isnan()]
        return float(vals.mean()) if len(vals) else None

    return {
        "top1": 100.0 * float(correct1.double().mean()),
        "top5": 100.0 * float(correct5.double().mean()),
        "many": group_mean(groups["many"]),
        "medium": group_mean(groups["medium"]),
        "few": group_mean(groups["few"]),
        "per_class": [None if v != v else float(v) for v in per_class.tolist()],
        "shot_rule": rule,
        "group_sizes": {k: len(v) for k, v in groups.items()},
    }


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, train_counts: Sequence[int],
             rule: str = "released", head: str = "fc_cb", world: World = World(), also: Sequence[str] = (),
             memory_format: torch.memory_format = torch.contiguous_format) -> Dict:
    """Figures of `head` over the whole test set, and `top1_<h>` of `head` and of each head in `also`;
    under torchrun each rank predicts its shard and all are gathered."""
    parts = gather_objects(world, predict(model, loader, device, head=head, also=also, memory_format=memory_format))
    preds, targets = torch.cat([p for p, _, _ in parts]), torch.cat([t for _, t, _ in parts])
    result = {**summarize(preds, targets, train_counts, rule), "head": head, "test_images": len(targets)}
    result[f"top1_{head}"] = result["top1"]
    for h in also:
        result[f"top1_{h}"] = 100.0 * float((torch.cat([o[h] for _, _, o in parts]) == targets).double().mean())
    return result


def format_group(value: Optional[float]) -> str:
    return "empty" if value is None else f"{value:.2f}"
