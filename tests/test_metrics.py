import pytest
import torch

from utils.metrics import shot_groups, summarize


def test_shot_rules_differ_only_at_twenty():
    counts = [500, 101, 100, 21, 20, 19, 5]
    assert shot_groups(counts, "released") == {"many": [0, 1], "medium": [2, 3], "few": [4, 5, 6]}
    assert shot_groups(counts, "common") == {"many": [0, 1], "medium": [2, 3, 4], "few": [5, 6]}


def test_cifar100_if100_group_sizes():
    counts = [int(500 * 0.01 ** (c / 99)) for c in range(100)]
    sizes = lambda rule: [len(v) for v in shot_groups(counts, rule).values()]  # noqa: E731
    assert sizes("released") == [35, 34, 31] and sizes("common") == [35, 35, 30]


def test_summary_against_hand_computation():
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    top1 = torch.tensor([0, 0, 1, 2, 1, 0, 0, 0])
    others = torch.tensor([[1, 2]] * 8)
    preds = torch.cat([top1[:, None], others], dim=1)
    preds[6, 1] = 2  # sample 6 (class 2) is right at rank 2
    out = summarize(preds, targets, train_counts=[300, 50, 10])
    assert out["top1"] == pytest.approx(100 * 3 / 8)
    assert out["per_class"] == pytest.approx([50.0, 50.0, 0.0])
    # Rows 2 and 3 (class 0) read [1, 1, 2] and [2, 1, 2]: the only misses within the top k.
    assert out["top5"] == pytest.approx(100 * 6 / 8)
    assert (out["many"], out["medium"], out["few"]) == (50.0, 50.0, 0.0)


def test_empty_group_is_none_not_zero():
    preds = torch.tensor([[0], [1]])
    out = summarize(preds, torch.tensor([0, 1]), train_counts=[5000, 150])
    assert out["few"] is None and out["medium"] is None and out["many"] == 100.0
