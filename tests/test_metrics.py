import pytest
import torch

from utils.metrics import evaluate, format_group, predict, shot_groups, summarize


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


class LogitsAreTheInput(torch.nn.Module):
    """fc_cb logits = the input, fc logits = minus the input; records whether gradients were on."""

    def __init__(self):
        super().__init__()
        self.heads, self.grad_enabled = [], []

    def forward(self, x, head="fc_cb"):
        self.heads.append(head)
        self.grad_enabled.append(torch.is_grad_enabled())
        if not isinstance(head, str):
            return tuple(x if h == "fc_cb" else -x for h in head)
        return x if head == "fc_cb" else -x


def test_predict_ranks_the_logits_of_the_chosen_head_and_skips_empty_batches():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, 5.0, 4.0, -1.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    loader = [(logits[:1], torch.tensor([4])), None, (logits[1:], torch.tensor([0]))]
    model = LogitsAreTheInput()
    preds, targets, others = predict(model, loader, torch.device("cpu"))
    assert preds.tolist() == [[4, 5, 1, 3, 2], [0, 1, 2, 3, 4]]  # top 5 by default, best first
    assert targets.tolist() == [4, 0] and model.heads == ["fc_cb", "fc_cb"] and model.grad_enabled == [False] * 2
    assert others == {}
    preds, _, _ = predict(model, loader, torch.device("cpu"), k=2, head="fc")
    assert preds.tolist() == [[6, 0], [6, 5]]
    shift = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0])  # a post-hoc shift is added to the logits
    preds, _, others = predict(model, loader, torch.device("cpu"), k=1, logit_shift=shift, also=("fc",))
    assert preds.tolist() == [[6], [6]]  # the shift moves the evaluated head only ...
    assert others["fc"].tolist() == [6, 6]  # ... fc's top-1 is the smallest input: 6 in both rows, unshifted
    assert model.heads[-1] == ("fc_cb", "fc")  # one forward for both heads


def test_evaluate_reports_head_images_rule_and_groups():
    logits = torch.eye(3) * 5
    loader = [(logits, torch.tensor([0, 1, 1]))]
    out = evaluate(LogitsAreTheInput(), loader, torch.device("cpu"), train_counts=[300, 50, 20], also=("fc",))
    assert out["head"] == "fc_cb" and out["test_images"] == 3 and out["shot_rule"] == "released"
    # fc's logits are minus the input: it predicts class 1 for the first image and class 0 for the others
    assert out["top1_fc_cb"] == pytest.approx(200 / 3) and out["top1_fc"] == 0.0
    assert out["group_sizes"] == {"many": 1, "medium": 1, "few": 1}
    assert out["top1"] == pytest.approx(200 / 3) and out["per_class"][:2] == [100.0, 50.0]
    assert out["per_class"][2] is None and out["few"] is None  # no test image of class 2: no figure, not 0


def test_default_and_unknown_shot_rules():
    assert shot_groups([21, 20]) == {"many": [], "medium": [0], "few": [1]}  # released: few <= 20
    with pytest.raises(ValueError, match="^unknown shot rule 'x'; expected one of \\['released', 'common'\\]$"):
        shot_groups([5], "x")


def test_group_figures_print_with_two_decimals_or_as_empty():
    assert format_group(None) == "empty" and format_group(12.5) == "12.50" and format_group(0.0) == "0.00"
