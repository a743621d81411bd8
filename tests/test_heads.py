"""The classifier a figure comes from: the run's evaluation head, in training, test.py, the MaxNorm stage
and reports, and both heads' top-1 in every epoch's record."""
import json
import os

import pytest
import torch

import main as train_script
import test as test_script
from datasets import build_data
from scripts import maxnorm_stage
from tests.conftest import TINY_DATA, TINY_TRAIN
from utils.checkpoint import load_weights
from glmc.losses import evaluation_head


@pytest.mark.parametrize("method, fixed_alpha, epochs, head", [
    ("glmc", None, 200, "fc_cb"),  # as released
    ("glmc", None, 2, "fc_cb"),  # epoch 2 trains fc_cb with weight (1/2)^2
    ("glmc", None, 1, "fc"),  # alpha = 1 - (0/1)^2 = 1 in the only epoch
    ("glmc", 1.0, 200, "fc"),  # the re-balanced term has weight 1 - 1 = 0
    ("glmc", 0.5, 1, "fc_cb"),  # a fixed alpha below 1 trains fc_cb from the first step
    ("glmc", 0.0, 200, "fc_cb"),
    ("ce", None, 200, "fc"),
])
def test_the_evaluated_head_is_the_one_the_objective_trains(method, fixed_alpha, epochs, head):
    assert evaluation_head(method, fixed_alpha, epochs)[0] == head


def train(tmp_path, data_root, *extra, root_log="runs"):
    train_script.main(train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--root_log", str(tmp_path / root_log), *extra]))
    (name,) = os.listdir(tmp_path / root_log)
    return str(tmp_path / root_log / name)


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def top1_by_hand(data_root, checkpoint_path, head):
    """Top-1 of `head` of a checkpoint on the tiny test set, forwarded here image by image."""
    data = build_data(test_script.get_args_parser().parse_args(TINY_DATA + ["--root", data_root, "--resume", "x"]),
                      views=1)
    model = train_script.build_model("resnet32", 10, 8)
    load_weights(model, torch.load(checkpoint_path, weights_only=False)["state_dict"], checkpoint_path)
    model.eval()
    with torch.no_grad():
        hits = [int(getattr(model, head)(model.features(x[None])).argmax()) == y for x, y in
                (data.test[i] for i in range(len(data.test)))]
    return 100.0 * sum(hits) / len(hits)


@pytest.mark.slow
def test_fixed_alpha_one_is_evaluated_with_fc_and_records_both_heads(tmp_path, data_root):
    run_dir = train(tmp_path, data_root, "--epochs", "2", "--fixed_alpha", "1")
    meta = json.load(open(os.path.join(run_dir, "args.json")))
    assert meta["eval_head"] == "fc" and "--fixed_alpha 1" in meta["eval_head_reason"]
    last = records(run_dir)[-1]
    latest = os.path.join(run_dir, "ckpt.pth.tar")
    assert last["top1"] == last["top1_fc"] == pytest.approx(top1_by_hand(data_root, latest, "fc"))
    assert last["top1_fc_cb"] == pytest.approx(top1_by_hand(data_root, latest, "fc_cb"))


@pytest.mark.slow
def test_glmc_records_both_heads_and_keeps_fc_cb(tmp_path, data_root):
    run_dir = train(tmp_path, data_root, "--epochs", "2")
    assert json.load(open(os.path.join(run_dir, "args.json")))["eval_head"] == "fc_cb"
    for record in records(run_dir):
        assert record["top1"] == record["top1_fc_cb"] and "top1_fc" in record
    latest = os.path.join(run_dir, "ckpt.pth.tar")
    assert records(run_dir)[-1]["top1_fc"] == pytest.approx(top1_by_hand(data_root, latest, "fc"))


@pytest.mark.slow
def test_test_py_scores_a_ce_run_with_fc_as_the_run_did(tmp_path, data_root, capsys):
    run_dir = train(tmp_path, data_root, "--epochs", "2", "--method", "ce")
    best = max(records(run_dir), key=lambda r: r["top1"])
    result = test_script.main(test_script.get_args_parser().parse_args(
        TINY_DATA + ["--root", data_root, "--resume", run_dir]))
    out = capsys.readouterr().out
    assert "classifier fc: the run's evaluation head: the CE baseline trains fc only" in out
    assert result["head"] == "fc" and result["top1"] == pytest.approx(best["top1"])
    report = json.load(open(os.path.join(run_dir, "eval", "best-fc.json")))
    assert report["top1"] == pytest.approx(best["top1"])
    forced = test_script.main(test_script.get_args_parser().parse_args(
        TINY_DATA + ["--root", data_root, "--resume", run_dir, "--head", "fc_cb"]))
    assert "not the run's evaluation head fc" in capsys.readouterr().out
    assert forced["top1"] == pytest.approx(top1_by_hand(data_root, os.path.join(run_dir, "ckpt.best.pth.tar"),
                                                        "fc_cb"))


@pytest.mark.slow
def test_maxnorm_stage_retrains_the_head_a_ce_run_trained(tmp_path, data_root, capsys):
    run_dir = train(tmp_path, data_root, "--epochs", "2", "--method", "ce")
    best = max(records(run_dir), key=lambda r: r["top1"])
    out = maxnorm_stage.main(maxnorm_stage.get_args_parser().parse_args(
        ["--root", data_root, "-j", "0", "--epochs", "2", "--resume", run_dir]))
    assert "re-trains fc (the run's evaluation head" in capsys.readouterr().out
    assert out["before"]["head"] == "fc" and out["before"]["top1"] == pytest.approx(best["top1"])
    source = torch.load(os.path.join(run_dir, "ckpt.best.pth.tar"), weights_only=False)["state_dict"]
    saved = torch.load(os.path.join(run_dir, "ckpt.best.maxnorm-epochs2.pth.tar"), weights_only=False)["state_dict"]
    params = {k for k in source if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert {k for k in params if not torch.equal(source[k], saved[k])} == {"fc.weight", "fc.bias"}


@pytest.mark.slow
def test_reports_of_root_model_checkpoints_land_in_the_run_folder(tmp_path, data_root, capsys):
    run_dir = train(tmp_path, data_root, "--epochs", "2", "--root_model", str(tmp_path / "models"))
    ckpt = os.path.join(tmp_path, "models", os.path.basename(run_dir), "ckpt.best.pth.tar")
    assert os.path.isfile(ckpt) and not os.path.exists(os.path.join(run_dir, "ckpt.best.pth.tar"))
    test_script.main(test_script.get_args_parser().parse_args(TINY_DATA + ["--root", data_root, "--resume", ckpt]))
    maxnorm_stage.main(maxnorm_stage.get_args_parser().parse_args(
        ["--root", data_root, "-j", "0", "--epochs", "1", "--resume", ckpt]))
    assert sorted(os.listdir(os.path.join(run_dir, "eval"))) == [
        "best-fc_cb.json", "maxnorm-best-epochs1-best.json", "maxnorm-best-epochs1-last.json"]


@pytest.mark.slow
def test_a_checkpoint_of_no_run_folder_gets_no_report_and_says_so(tmp_path, data_root, capsys):
    run_dir = train(tmp_path, data_root, "--epochs", "2")
    checkpoint = torch.load(os.path.join(run_dir, "ckpt.best.pth.tar"), weights_only=False)
    loose = str(tmp_path / "loose.pth.tar")
    torch.save({"state_dict": checkpoint["state_dict"]}, loose)  # as a released checkpoint: no description
    result = test_script.main(test_script.get_args_parser().parse_args(
        TINY_DATA + ["--root", data_root, "--resume", loose]))
    out = capsys.readouterr().out
    assert result["head"] == "fc_cb" and "released" in out and "no report written" in out
