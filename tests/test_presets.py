"""Paper presets: a flag left out takes the paper's value for --dataset, a flag given wins; the start-up
print, args.json and --help say so; test.py shows evaluation flags only; the per-class plot at 10-1000 classes."""
import json
import os
import random

import pytest
from PIL import Image

import main as train_script
import test as test_script
from tests.conftest import write_cifar
from tests.test_image_files import folder_style, imagenet_style
from utils.report import plot_per_class

# The GLMC README's commands, written out: (arch, lr, epochs, batch, weight decay, momentum, q, gamma, contrast)
PAPER = {
    "cifar10": ("resnet32", 0.01, 200, 64, 5e-3, 0.9, 0.0, 1.2, 4.0),
    "cifar100": ("resnet32", 0.01, 200, 64, 5e-3, 0.9, 0.0, 1.2, 10.0),
    "ImageNet-LT": ("resnext50_32x4d", 0.1, 135, 120, 2e-4, 0.9, 0.2, 1.0, 10.0),
    "iNaturelist2018": ("resnext50_32x4d", 0.1, 120, 128, 1e-4, 0.9, 0.2, 1.0, 10.0),
    "nepes": ("resnet50", 0.01, 200, 64, 5e-3, 0.9, 0.0, 1.2, 4.0),
}
FLAGS = ("arch", "lr", "epochs", "batch_size", "weight_decay", "momentum", "resample_weighting", "label_weighting",
         "contrast_weight")


def data_flags(dataset, tmp_path):
    if dataset.startswith("cifar"):
        root = str(tmp_path / "data")
        write_cifar(root, dataset=dataset, train_per_class=6, test_per_class=1)
        return ["--root", root, "--no_download", "--imbanlance_rate", "0.5"]
    if dataset == "nepes":
        return ["--root", folder_style(tmp_path, "val"), "--image_size", "32"]
    root, train_txt, test_txt = imagenet_style(tmp_path)
    return ["--root", root, "--dir_train_txt", train_txt, "--dir_test_txt", test_txt, "--num_classes", "4",
            "--image_size", "32"]


def dry_run(tmp_path, capsys, *argv):
    """(what args.json would hold, the printed start-up) of a dry run, which writes nothing."""
    meta = train_script.main(train_script.get_args_parser().parse_args(
        list(argv) + ["-j", "0", "--dry_run", "--no_tensorboard", "--root_log", str(tmp_path / "runs")]))
    assert not (tmp_path / "runs").exists()
    return json.loads(json.dumps(meta, default=str)), capsys.readouterr().out


@pytest.mark.parametrize("dataset", list(PAPER))
def test_each_preset_row_through_the_dry_run(tmp_path, capsys, dataset):
    meta, out = dry_run(tmp_path, capsys, "--dataset", dataset, *data_flags(dataset, tmp_path))
    assert tuple(meta["args"][f] for f in FLAGS) == PAPER[dataset]
    assert all(meta["flag_sources"][f] == "preset" for f in FLAGS)
    assert meta["flag_sources"]["dataset"] == "given" and meta["flag_sources"]["seed"] == "default"
    assert f"contrast_weight={PAPER[dataset][8]} (preset)" in out
    assert len(meta["lr_per_epoch"]) == PAPER[dataset][2]


def test_a_flag_given_beats_the_preset(tmp_path, capsys):
    meta, out = dry_run(tmp_path, capsys, "--dataset", "cifar100", "--contrast_weight", "2", "-b", "32",
                        *data_flags("cifar100", tmp_path))
    assert meta["args"]["contrast_weight"] == 2.0 and meta["flag_sources"]["contrast_weight"] == "given"
    assert meta["args"]["batch_size"] == 32 and meta["flag_sources"]["batch_size"] == "given"
    assert meta["args"]["lr"] == 0.01 and meta["flag_sources"]["lr"] == "preset"
    assert "contrast_weight=2.0 (given)" in out and "batch_size=32 (given)" in out


def test_startup_print_shows_only_the_flags_that_apply(tmp_path, capsys):
    _, out = dry_run(tmp_path, capsys, "--dataset", "cifar10", "--epochs", "3", *data_flags("cifar10", tmp_path))
    config = out.split("training images per class")[0]
    assert "imbanlance_rate=0.5 (given)" in config and "image_size" not in config and "dir_train_txt" not in config
    assert "warmup" not in config and "beta=" not in config  # cosine without warm-up; lambda uniform
    assert "learning rate per epoch: 1: 0.01, 2: 0.0075, 3: 0.0025; peak 0.01 at epoch 1" in out
    assert max(len(line) for line in config.splitlines()) < 300


def test_list_data_start_up_leaves_out_cifar_flags(tmp_path, capsys):
    _, out = dry_run(tmp_path, capsys, "--dataset", "ImageNet-LT", "--epochs", "14",
                     *data_flags("ImageNet-LT", tmp_path))
    config = out.split("training images per class")[0]
    assert "imbanlance_rate" not in config and "data_path" not in config and "split=" not in config
    assert "warmup=late" in config and "width=" not in config
    assert "2: 0.01, 3: 0.02, ..., 14:" in out and "peak 0.11 at epoch 12" in out  # the released warm-up


def test_resume_keeps_the_runs_values_and_sources(tmp_path, capsys):
    flags = data_flags("cifar100", tmp_path)
    train_script.main(train_script.get_args_parser().parse_args(
        ["--dataset", "cifar100", *flags, "-a", "resnet32", "--width", "8", "--epochs", "1", "-b", "16", "-j", "0",
         "--no_tensorboard", "--root_log", str(tmp_path / "runs")]))
    (name,) = os.listdir(tmp_path / "runs")
    run_dir = str(tmp_path / "runs" / name)
    capsys.readouterr()
    train_script.main(train_script.get_args_parser().parse_args(["--resume", run_dir, *flags[:2], "-j", "0"]))
    out = capsys.readouterr().out
    assert "nothing to resume" in out  # the run's 1 epoch, not the cifar10 preset's 200


def test_help_shows_defaults_presets_and_the_released_defaults(capsys):
    with pytest.raises(SystemExit):
        train_script.get_args_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: preset per data set, see below)" in text and "(default: 50)" in text
    assert "iNaturelist2018  resnext50_32x4d  0.1   120" in text and "resnet34" in text


def test_test_py_help_has_evaluation_flags_only(capsys):
    with pytest.raises(SystemExit):
        test_script.get_args_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--split", "--skip_bad_images", "--allow_empty_classes", "--data_seed", "--seed", "--batch_size",
                 "--epochs", "--max_norm"):
        assert flag not in text
    for flag in ("--resume", "--head", "--tau_norm", "--norm_cap", "--logit_adjust", "--json", "--plot"):
        assert flag in text


def test_released_checkpoint_without_arch_gets_the_papers_network():
    args = test_script.get_args_parser().parse_args(["--dataset", "ImageNet-LT", "--resume", "x"])
    from utils.presets import preset_network_and_crop
    preset_network_and_crop(args)
    assert args.arch == "resnext50_32x4d"


@pytest.mark.parametrize("classes, names", [(10, "cifar"), (100, None), (1000, None)])
def test_plot_renders_at_10_100_and_1000_classes(tmp_path, classes, names):
    counts = [int(500 * 0.01 ** (c / (classes - 1))) for c in range(classes)]
    rng = random.Random(0)
    acc = [rng.uniform(0, 100) for _ in range(classes)]
    acc[3] = None  # a class absent from the test set
    class_names = [f"name{c}" for c in range(classes)] if names else None
    path = str(tmp_path / "p.png")
    plot_per_class(acc, counts, "released", path, title="t", class_names=class_names)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] >= 1000
        pixels = img.convert("RGB")
        blue = sum(1 for x in range(0, img.size[0], 2) for y in range(0, img.size[1], 4)
                   if pixels.getpixel((x, y)) == (49, 130, 189))
    assert blue > 500  # the bars are drawn
