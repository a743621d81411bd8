"""test.py's post-hoc tools and reports, and the MaxNorm second stage."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import main as train_script
import test as test_script
from scripts import maxnorm_stage
from tests.conftest import write_cifar
from utils.checkpoint import load_weights, strip_prefixes
from utils.maxnorm import class_balanced_weights, max_norm_threshold, project_rows_, train_classifier_max_norm
from utils.report import confusion_cells

DATA = ["--dataset", "cifar10", "-a", "resnet32", "--width", "8", "--imbanlance_rate", "0.1", "-j", "0",
        "--no_download"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaltools")
    root = str(tmp / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    train_script.main(train_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--epochs", "1", "-b", "16", "--no_tensorboard", "--root_log", str(tmp / "runs")]))
    (run,) = os.listdir(tmp / "runs")
    return root, str(tmp / "runs" / run / "ckpt.pth.tar")


def test_threshold_and_projection_against_hand_values():
    weight = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 2.0]])  # norms 5, 1, 2
    cap = max_norm_threshold(weight, 0.25)
    assert cap == pytest.approx(1 + 0.25 * (5 - 1))  # 2.0
    project_rows_(weight, cap)
    assert torch.allclose(weight[0], torch.tensor([3.0, 4.0]) * 2.0 / 5.0)  # above: lands on the cap
    assert torch.equal(weight[1], torch.tensor([0.6, 0.8]))  # below: unchanged
    assert torch.equal(weight[2], torch.tensor([0.0, 2.0]))  # on the cap: unchanged


def test_class_balanced_weights_formula():
    w = class_balanced_weights([100, 10], 0.99)
    raw = np.array([(1 - 0.99) / (1 - 0.99 ** 100), (1 - 0.99) / (1 - 0.99 ** 10)])
    assert torch.allclose(w, torch.tensor(raw / raw.sum() * 2, dtype=torch.float32))


def test_second_stage_keeps_rows_within_the_cap():
    torch.manual_seed(0)
    clf = nn.Linear(6, 3)
    with torch.no_grad():
        clf.weight[0] *= 10  # one long row
    cap = max_norm_threshold(clf.weight, 0.1)
    feats, labels = torch.randn(40, 6), torch.randint(0, 3, (40,))
    bias_before = clf.bias.clone()
    stats = train_classifier_max_norm(clf, feats, labels, [30, 8, 2], epochs=3, thresh=0.1, batch_size=8)
    assert stats["cap"] == pytest.approx(cap)
    assert (clf.weight.norm(dim=1) <= cap + 1e-5).all()
    assert not torch.equal(clf.bias, bias_before)  # the bias trains and is never capped


def test_second_stage_script_changes_only_the_classifier(trained, capsys):
    root, ckpt = trained
    out = ckpt.replace(".pth.tar", ".maxnorm.pth.tar")
    maxnorm_stage.main(maxnorm_stage.get_args_parser().parse_args(DATA + ["--root", root, "--resume", ckpt,
                                                                          "--epochs", "2"]))
    before = strip_prefixes(torch.load(ckpt, weights_only=False)["state_dict"])
    after = torch.load(out, weights_only=False)
    changed = {k for k in before if not torch.equal(before[k], after["state_dict"][k])}
    assert changed and changed <= {"fc_cb.weight", "fc_cb.bias"}
    cap = after["maxnorm_stage"]["cap"]
    assert cap == pytest.approx(max_norm_threshold(before["fc_cb.weight"], 0.1))
    assert (after["state_dict"]["fc_cb.weight"].norm(dim=1) <= cap + 1e-5).all()
    assert "saved" in capsys.readouterr().out


def manual_predictions(root, ckpt, head, shift):
    """Forward the test images by hand: the checkpoint's model, the named head, plus `shift`."""
    from datasets import build_data

    args = test_script.get_args_parser().parse_args(DATA + ["--root", root, "--resume", ckpt])
    data = build_data(args)
    model = train_script.build_model("resnet32", 10, 8)
    load_weights(model, torch.load(ckpt, weights_only=False)["state_dict"], ckpt)
    model.eval()
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        feats = model.features(x)
        logits = getattr(model, head)(feats) + shift
    return logits.argmax(1), torch.tensor(data.test.targets), data.train_counts


@pytest.mark.parametrize("head", ["fc_cb", "fc"])
def test_logit_adjustment_and_head_against_hand_computation(trained, tmp_path, head):
    root, ckpt = trained
    counts = [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    shift = (-1.5 * torch.log(prior)).float()
    pred, targets, train_counts = manual_predictions(root, ckpt, head, shift)
    assert train_counts == counts
    report_path = tmp_path / "r.json"
    test_script.main(test_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--resume", ckpt, "--head", head, "--logit_adjust", "1.5", "--json", str(report_path)]))
    report = json.loads(report_path.read_text())
    assert report["top1"] == pytest.approx(100 * (pred == targets).double().mean().item())
    assert report["head"] == head and report["logit_adjust"] == 1.5


def test_json_fields_and_png(trained, tmp_path):
    root, ckpt = trained
    test_script.main(test_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--resume", ckpt, "--max_norm", "0.1", "--json", str(tmp_path / "r.json"),
                "--plot", str(tmp_path / "p.png")]))
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"top1", "top5", "many", "medium", "few", "per_class", "shot_rule", "confusion", "head", "max_norm",
            "train_counts"} <= set(report)
    assert sum(cell[2] for cell in report["confusion"]) == 30  # every test image once
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_confusion_cells_by_hand():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    top1 = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_cells(top1, targets, 3) == [[0, 0, 1], [0, 1, 1], [1, 1, 1], [2, 0, 1], [2, 2, 2]]


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
@pytest.mark.parametrize("wrapped", [True, False])
def test_checkpoint_formats_load_in_test_py(trained, tmp_path, prefix, wrapped, capsys):
    root, ckpt = trained
    sd = {prefix + k: v for k, v in torch.load(ckpt, weights_only=False)["state_dict"].items()}
    path = tmp_path / "c.pth"
    torch.save({"epoch": 1, "state_dict": sd, "best_acc1": 0.0} if wrapped else sd, path)
    result = test_script.main(test_script.get_args_parser().parse_args(DATA + ["--root", root, "--resume", str(path)]))
    reference = test_script.main(test_script.get_args_parser().parse_args(DATA + ["--root", root, "--resume", ckpt]))
    assert result["top1"] == reference["top1"] and result["per_class"] == reference["per_class"]
    assert math.isfinite(result["top5"])
