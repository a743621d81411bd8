"""test.py's post-hoc tools and reports."""
import json
import math
import os

import pytest
import torch
from PIL import Image

import main as train_script
import test as test_script
from tests.conftest import write_cifar
from utils.checkpoint import load_weights
from utils.report import confusion_cells

DATA = ["--dataset", "cifar10", "-a", "resnet32", "--width", "8", "--imbanlance_rate", "0.1", "-j", "0",
        "--no_download"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaltools")
    root = str(tmp / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    train_script.main(train_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--epochs", "2", "-b", "16", "--no_tensorboard", "--root_log", str(tmp / "runs")]))
    (run,) = os.listdir(tmp / "runs")
    return root, str(tmp / "runs" / run / "ckpt.pth.tar")


def hand_test_batch(root, ckpt):
    """The test images as one batch, their labels and the training counts, built as test.py builds them."""
    from datasets import build_data

    data = build_data(test_script.get_args_parser().parse_args(DATA + ["--root", root, "--resume", ckpt]))
    return torch.stack([data.test[i][0] for i in range(len(data.test))]), torch.tensor(data.test.targets), \
        data.train_counts


def manual_predictions(root, ckpt, head, shift, rows=None):
    """Forward the test images by hand: the checkpoint's model, the named head (its weight rows through
    `rows` when given), plus `shift`."""
    x, targets, counts = hand_test_batch(root, ckpt)
    model = train_script.build_model("resnet32", 10, 8)
    load_weights(model, torch.load(ckpt, weights_only=False)["state_dict"], ckpt)
    model.eval()
    if rows is not None:
        with torch.no_grad():
            getattr(model, head).weight.copy_(rows(getattr(model, head).weight))
    with torch.no_grad():
        logits = getattr(model, head)(model.features(x)) + shift
    return logits.argmax(1), targets, counts


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


def tau_normalised_by_hand(weight, tau):
    norms = [math.sqrt(sum(v * v for v in row)) for row in weight.tolist()]
    return weight * torch.tensor([1.0 / n ** tau for n in norms])[:, None]


def capped_by_hand(weight, thresh):
    norms = [math.sqrt(sum(v * v for v in row)) for row in weight.tolist()]
    cap = min(norms) + thresh * (max(norms) - min(norms))
    return weight * torch.tensor([min(1.0, cap / n) for n in norms])[:, None]


@pytest.mark.parametrize("flag, value, rows", [("--tau_norm", 1.0, tau_normalised_by_hand),
                                               ("--tau_norm", 2.0, tau_normalised_by_hand),
                                               ("--norm_cap", 0.1, capped_by_hand)])
def test_row_rescaling_against_hand_computation(trained, tmp_path, flag, value, rows):
    root, trained_ckpt = trained
    # The run's description with a fresh network whose head rows point about the same way (the mean test
    # feature) with norms from 5 down to 0.2: as they are, class 0 always wins; rescaled, the small
    # differences in direction decide.
    checkpoint = torch.load(trained_ckpt, weights_only=False)
    torch.manual_seed(0)
    model = train_script.build_model("resnet32", 10, 8).eval()
    with torch.no_grad():
        mean = model.features(hand_test_batch(root, trained_ckpt)[0]).mean(0)
        model.fc_cb.weight.copy_(torch.linspace(5.0, 0.2, 10)[:, None] * mean / mean.norm()
                                 + 0.05 * torch.randn(10, len(mean)))
        model.fc_cb.bias.zero_()
    checkpoint["state_dict"] = model.state_dict()
    del checkpoint["checksum"]  # edited on purpose
    ckpt = str(tmp_path / "rows.pth.tar")
    torch.save(checkpoint, ckpt)
    pred, targets, _ = manual_predictions(root, ckpt, "fc_cb", 0.0, rows=lambda w: rows(w, value))
    unchanged, _, _ = manual_predictions(root, ckpt, "fc_cb", 0.0)
    assert not torch.equal(pred, unchanged)
    test_script.main(test_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--resume", ckpt, flag, str(value), "--json", str(tmp_path / "r.json")]))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["confusion"] == confusion_cells(pred, targets, 10)
    assert report["evaluation"] == ("fc_cb-tau" if flag == "--tau_norm" else "fc_cb-cap") + f"{value:g}"


def test_tau_normalisation_of_hand_rows():
    from glmc.maxnorm import tau_normalize_rows_
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.5]])  # norms 5 and 0.5
    tau_normalize_rows_(weight, 1.0)
    assert torch.allclose(weight, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    tau_normalize_rows_(weight, 0.5)
    assert torch.allclose(weight, torch.tensor([[3 / 5 ** 0.5, 4 / 5 ** 0.5], [0.0, 0.5 / 0.5 ** 0.5]]))


def test_old_max_norm_flag_stops_with_the_new_names(trained, capsys):
    from utils.config import run_cli
    root, ckpt = trained
    with pytest.raises(SystemExit) as exc:
        run_cli(test_script.main, test_script.get_args_parser(),
                DATA + ["--root", root, "--resume", ckpt, "--max_norm", "0.1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--norm_cap 0.1" in err and "maxnorm_stage.py" in err and "Traceback" not in err


def test_json_fields_and_png(trained, tmp_path):
    root, ckpt = trained
    test_script.main(test_script.get_args_parser().parse_args(
        DATA + ["--root", root, "--resume", ckpt, "--norm_cap", "0.1", "--json", str(tmp_path / "r.json"),
                "--plot", str(tmp_path / "p.png")]))
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"top1", "top5", "many", "medium", "few", "per_class", "shot_rule", "confusion", "head", "norm_cap",
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
