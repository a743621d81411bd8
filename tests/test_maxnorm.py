"""The MaxNorm second stage: the reference recipe's pieces by hand, its options, and the script on every data kind."""
import glob
import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from torch import nn

import main as train_script
import glmc.maxnorm as maxnorm
from scripts import maxnorm_stage
from tests.conftest import write_cifar
from tests.test_image_files import folder_style, imagenet_style
from utils.checkpoint import strip_prefixes
from utils.errors import RunStopped
from glmc.maxnorm import (StageOptions, cb_focal_loss, cb_softmax_loss, class_balanced_weights, max_norm_threshold,
                           project_rows_, stage_lr, train_second_stage)


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


def softmax_by_hand(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_class_balanced_softmax_loss_on_a_hand_made_batch():
    logits = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    labels, class_w = [0, 2], [0.5, 1.0, 1.5]
    terms = []
    for row, y in zip(logits, labels):
        for c, p in enumerate(softmax_by_hand(row)):  # BCE of every class's probability, weighted by w_y
            terms.append(-class_w[y] * (math.log(p) if c == y else math.log(1 - p)))
    expected = sum(terms) / len(terms)  # mean over batch and classes
    got = cb_softmax_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(class_w))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_class_balanced_focal_loss_on_a_hand_made_batch():
    logits = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    labels, class_w = [0, 2], [0.5, 1.0, 1.5]
    p = [softmax_by_hand(row)[y] for row, y in zip(logits, labels)]
    expected = sum(class_w[y] * (1 - q) ** 2 * -math.log(q) for q, y in zip(p, labels)) / 2
    got = cb_focal_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(class_w), 2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_cosine_stepped_at_each_epochs_start_ends_at_zero():
    ref = StageOptions()  # 10 epochs from 0.01
    assert stage_lr(ref, 0) == pytest.approx(0.005 * (1 + math.cos(math.pi / 10)))
    assert stage_lr(ref, 9) == pytest.approx(0.0, abs=1e-12)
    end = StageOptions(lr_step="end")
    assert stage_lr(end, 0) == pytest.approx(0.01) and stage_lr(end, 5) == pytest.approx(0.005)


def test_variant_names_the_options_that_differ():
    assert StageOptions().variant() == "reference"
    assert StageOptions(loss="cb_focal", project="step").variant() == "loss=cb_focal,project=step"
    assert StageOptions(thresh=0.2, focal_gamma=1.0).variant() == "thresh=0.2"  # gamma: only for the focal loss


class Toy(nn.Module):
    """The parts of a GLMC network the stage uses: `features` (with BatchNorm) and `fc_cb`."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.fc = nn.Linear(6, 3)
        self.fc_cb = nn.Linear(6, 3)
        with torch.no_grad():
            self.fc_cb.weight[0] *= 20  # one long row: the cap bites

    def features(self, x):
        return self.body(x)


def toy_batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    return [(torch.randn(8, 4, generator=g) + 1.0, torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]


def run_toy(monkeypatch, scores=None, features=False, **options):
    """Train the toy for 3 epochs of 4 batches; count projections; record the head after each epoch."""
    torch.manual_seed(0)
    model = Toy()
    calls, seen = [], []
    real_project = maxnorm.project_rows_
    monkeypatch.setattr(maxnorm, "project_rows_", lambda w, cap: (calls.append(cap), real_project(w, cap)))
    scores = scores or [10.0, 20.0, 30.0]

    def evaluate(net):
        seen.append(net.fc_cb.weight.detach().clone())
        value = scores[len(seen) - 1]
        return {"top1": value, "per_class": [value, value, None]}

    batches = (lambda e: [(model.features(x).detach(), y) for x, y in toy_batches(e)]) if features else toy_batches
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_second_stage(model, batches, evaluate, [30, 8, 2], StageOptions(epochs=3, lr=0.1, **options),
                             torch.device("cpu"), log=lambda s: None)
    return model, before, out, calls, seen


def test_projection_once_per_epoch_after_its_training_phase(monkeypatch):
    model, before, out, calls, seen = run_toy(monkeypatch)
    assert len(calls) == 3  # 3 epochs, 12 updates: once per epoch
    assert out["cap"] == pytest.approx(max_norm_threshold(before["fc_cb.weight"], 0.1))
    for weight in seen:  # evaluated after the projection
        assert (weight.norm(dim=1) <= out["cap"] * (1 + 1e-6)).all()
    _, _, _, calls, _ = run_toy(monkeypatch, project="step")
    assert len(calls) == 12


def test_only_the_classifier_trains_and_batchnorm_moves_in_the_reference_mode(monkeypatch):
    model, before, _, _, _ = run_toy(monkeypatch)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"fc_cb.weight", "fc_cb.bias", "body.1.running_mean", "body.1.running_var"} <= changed
    assert changed <= {"fc_cb.weight", "fc_cb.bias", "body.1.running_mean", "body.1.running_var",
                       "body.1.num_batches_tracked"}


@pytest.mark.parametrize("options", [{"bn": "frozen"}, {"inputs": "features", "bn": "frozen"}])
def test_batchnorm_statistics_stay_when_frozen_or_on_features(monkeypatch, options):
    model, before, _, _, _ = run_toy(monkeypatch, features=options.get("inputs") == "features", **options)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc_cb.weight", "fc_cb.bias"}


def test_best_epoch_by_per_class_mean_and_its_weights(monkeypatch):
    model, _, out, _, seen = run_toy(monkeypatch, scores=[10.0, 50.0, 30.0])
    assert out["best"]["epoch"] == 2 and out["best"]["result"]["top1"] == 50.0
    assert torch.equal(out["best"]["state_dict"]["fc_cb.weight"], seen[1])
    assert torch.equal(model.fc_cb.weight, seen[2])  # the model itself ends at the last epoch
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3]
    assert out["history"][0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi / 3)))


# ---------------------------------------------------------------- the script on CIFAR, folder and list data

TINY_NET = ["-a", "resnet32", "--width", "8", "-j", "0"]


def train_run(tmp_path, data_flags):
    train_script.main(train_script.get_args_parser().parse_args(
        data_flags + TINY_NET + ["--epochs", "2", "-b", "8", "--no_tensorboard", "--root_log", str(tmp_path / "runs")]))
    (name,) = os.listdir(tmp_path / "runs")
    return str(tmp_path / "runs" / name)


def run_stage(run_dir, data_flags, *extra):
    args = maxnorm_stage.get_args_parser().parse_args(data_flags + ["-j", "0", "--epochs", "2", "--resume", run_dir,
                                                                    *extra])
    return maxnorm_stage.main(args)


def check_outputs(run_dir, variant="epochs=2"):  # the tests shorten the stage to 2 epochs
    best_ckpt = os.path.join(run_dir, "ckpt.best.pth.tar")
    source = strip_prefixes(torch.load(best_ckpt, weights_only=False)["state_dict"])
    slug = variant.replace("=", "").replace(",", "-")
    for name in (f"ckpt.best.maxnorm-{slug}.pth.tar", f"ckpt.best.maxnorm-{slug}.best.pth.tar"):
        saved = torch.load(os.path.join(run_dir, name), weights_only=False)
        params = {k for k in source if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        changed = {k for k in params if not torch.equal(source[k], saved["state_dict"][k])}
        assert changed <= {"fc_cb.weight", "fc_cb.bias"}
        assert saved["maxnorm_stage"]["variant"] == variant
    reports = sorted(os.listdir(os.path.join(run_dir, "eval")))
    assert reports == [f"maxnorm-best-{slug}-{w}.json" for w in ("best", "last")]
    best = json.load(open(os.path.join(run_dir, "eval", reports[0])))
    assert best["kind"] == "maxnorm stage" and "test set" in best["selection"] and len(best["history"]) == 2


def test_stage_on_cifar_tensor_path_and_the_features_variant(tmp_path):
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    data = ["--root", root, "--no_download"]
    run_dir = train_run(tmp_path, data + ["--imbanlance_rate", "0.1"])
    out = run_stage(run_dir, data)
    check_outputs(run_dir)
    assert out["history"][-1]["top1"] == out["last"]["top1"]
    source = strip_prefixes(torch.load(os.path.join(run_dir, "ckpt.best.pth.tar"), weights_only=False)["state_dict"])
    saved = torch.load(os.path.join(run_dir, "ckpt.best.maxnorm-epochs2.pth.tar"), weights_only=False)["state_dict"]
    assert not torch.equal(source["bn1.running_mean"], saved["bn1.running_mean"])  # train mode: statistics moved
    old = ["--loss", "cb_focal", "--project", "step", "--inputs", "features", "--lr_step", "end"]
    run_stage(run_dir, data, *old)
    saved = torch.load(os.path.join(run_dir, "ckpt.best.maxnorm-epochs2-losscb_focal-projectstep-inputsfeatures-"
                                             "bnfrozen-lr_stepend.pth.tar"), weights_only=False)
    assert saved["maxnorm_stage"]["bn"] == "frozen"
    assert torch.equal(source["bn1.running_mean"], saved["state_dict"]["bn1.running_mean"])
    assert len(os.listdir(os.path.join(run_dir, "eval"))) == 4  # the variant's reports sit beside the first's
    assert os.path.isfile(os.path.join(run_dir, "ckpt.best.maxnorm-epochs2.pth.tar"))  # and is not overwritten


def test_stage_on_a_folder_data_set(tmp_path):
    root = folder_style(tmp_path, "val", counts=(6, 4, 2))
    data = ["--dataset", "nepes", "--root", root, "--image_size", "32"]
    run_dir = train_run(tmp_path, data)
    run_stage(run_dir, ["--root", root, "-b", "4"])
    check_outputs(run_dir, "epochs=2,batch_size=4")


def test_stage_on_list_data(tmp_path):
    root, train_txt, test_txt = imagenet_style(tmp_path)
    data = ["--dataset", "ImageNet-LT", "--num_classes", "4", "--root", root, "--dir_train_txt", train_txt,
            "--dir_test_txt", test_txt]
    run_dir = train_run(tmp_path, data + ["--image_size", "32"])
    run_stage(run_dir, ["--root", root, "--dir_train_txt", train_txt, "--dir_test_txt", test_txt, "-b", "4"])
    check_outputs(run_dir, "epochs=2,batch_size=4")


def test_features_with_batchnorm_in_train_mode_is_refused(tmp_path):
    from utils.errors import UsageError
    args = maxnorm_stage.get_args_parser().parse_args(["--resume", "x", "--inputs", "features", "--bn", "train"])
    with pytest.raises(UsageError, match="--bn train needs --inputs images"):
        maxnorm_stage.stage_options(args)


@pytest.mark.parametrize("recipe, stop_signal", [([], signal.SIGTERM), (["--inputs", "features"], signal.SIGUSR2)],
                         ids=["images-SIGTERM", "features-SIGUSR2"])
def test_a_stage_stopped_mid_epoch_and_continued_ends_as_one_run_through(tmp_path, monkeypatch, capsys, recipe,
                                                                           stop_signal):
    """SIGTERM (or SIGUSR2, a cluster's warning) during the stage's second epoch (step 2 of 5; of 3 epochs, so that
    it trains at a learning rate above 0): the stage saves its state and says how to go on;
    the same command continues it, and the final weights equal those of a stage that was never stopped."""
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    data = ["--root", root, "--no_download"]
    run_dir = train_run(tmp_path, data + ["--imbanlance_rate", "0.1"])
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    stage = ["-b", "16", "--epochs", "3", *recipe]  # 78 images: 5 steps per epoch; epoch 2 at lr 0.0025
    run_stage(run_dir, data, *stage)
    real_printer = maxnorm_stage.progress_printer

    def printer_that_signals(*args):
        print_line = real_printer(*args)

        def on_step(epoch, step, images):
            print_line(epoch, step, images)
            if (epoch, step) == (1, 2):
                os.kill(os.getpid(), stop_signal)
        return on_step

    monkeypatch.setattr(maxnorm_stage, "progress_printer", printer_that_signals)
    with pytest.raises(RunStopped) as stopped:
        run_stage(copy, data, *stage)
    assert stopped.value.exit_code == 128 + stop_signal
    assert "at stage epoch 2, step 2/5" in str(stopped.value) and "the same command continues it" in str(stopped.value)
    (saved,) = glob.glob(os.path.join(copy, "ckpt.best.maxnorm-*.stopped.pth.tar"))
    slug = os.path.basename(saved)[len("ckpt.best.maxnorm-"):-len(".stopped.pth.tar")]
    assert not os.path.exists(os.path.join(copy, f"ckpt.best.maxnorm-{slug}.pth.tar"))
    monkeypatch.setattr(maxnorm_stage, "progress_printer", real_printer)
    capsys.readouterr()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # another machine's share: the stage keeps its own count
    try:
        run_stage(copy, data, *stage)
    finally:
        torch.set_num_threads(1)
    out = capsys.readouterr().out
    assert "continuing the stopped stage saved in" in out and not os.path.exists(saved)
    assert "CPU threads: 1 (the run's own count" in out
    for name in (f"ckpt.best.maxnorm-{slug}.pth.tar", f"ckpt.best.maxnorm-{slug}.best.pth.tar"):
        one, two = (torch.load(os.path.join(d, name), weights_only=False)["state_dict"] for d in (run_dir, copy))
        assert all(torch.equal(one[k], two[k]) for k in one), name
    reports = [json.load(open(os.path.join(d, "eval", f"maxnorm-best-{slug}-last.json"))) for d in (run_dir, copy)]
    assert reports[0]["history"] == reports[1]["history"] and reports[0]["before"] == reports[1]["before"]
