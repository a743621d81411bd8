"""ImageNet-LT / iNat lists, folder data sets, preflight, the iNat list script, warm-up, ResNeXt-50."""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.image_files import preflight, read_image_list, scan_class_folders
from models import build_model, count_parameters
from scripts.make_inat_lists import main as make_inat_lists
from tests.conftest import ROOT, released_layout
from utils.errors import UsageError
from glmc.schedule import WarmupCosineFactor


def write_jpeg(path, seed, size=40):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def imagenet_style(tmp_path, counts=(6, 4, 2, 1), test_per_class=2):
    """root/train/nXXXX/*.jpg and root/val/*.jpg with lists in the OLTR format."""
    root = tmp_path / "imagenet"
    train, test = [], []
    for c, n in enumerate(counts):
        for i in range(n):
            rel = f"train/n{c:08d}/n{c:08d}_{i}.JPEG"
            write_jpeg(root / rel, seed=c * 100 + i)
            train.append(f"{rel} {c}")
        for i in range(test_per_class):
            rel = f"val/ILSVRC2012_val_{c}_{i}.JPEG"
            write_jpeg(root / rel, seed=1000 + c * 10 + i)
            test.append(f"{rel} {c}")
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    return str(root), str(tmp_path / "train.txt"), str(tmp_path / "test.txt")


def folder_style(tmp_path, eval_name="valid", counts=(5, 3, 1)):
    root = tmp_path / "nepes"
    for c, n in enumerate(counts):
        for i in range(n):
            write_jpeg(root / "train" / f"defect_{chr(ord('c') - c)}" / f"{i}.jpg", seed=c * 10 + i)
        write_jpeg(root / eval_name / f"defect_{chr(ord('c') - c)}" / "0.jpg", seed=500 + c)
    return str(root)


def test_list_parsing(tmp_path):
    root, train_txt, _ = imagenet_style(tmp_path)
    paths, labels = read_image_list(train_txt, root, 4, "--dir_train_txt")
    assert len(paths) == 13 and labels.count(0) == 6 and labels.count(3) == 1
    assert paths[0] == os.path.join(root, "train/n00000000/n00000000_0.JPEG")


@pytest.mark.parametrize("line,needle", [
    ("train/a.jpg", "expected 'relative/path label'"),
    ("train/a.jpg seven", "not an integer"),
    ("train/a.jpg 4", "outside 0..3"),
    ("train/a.jpg -1", "outside 0..3"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, needle):
    listing = tmp_path / "bad.txt"
    listing.write_text("train/ok.jpg 1\n\n" + line + "\n")
    with pytest.raises(UsageError) as err:
        read_image_list(str(listing), str(tmp_path), 4, "--dir_train_txt")
    assert str(listing) in str(err.value) and "line 3" in str(err.value) and needle in str(err.value)


def test_missing_list_file(tmp_path):
    with pytest.raises(UsageError, match="--dir_test_txt .*nope.txt"):
        read_image_list(str(tmp_path / "nope.txt"), str(tmp_path), 4, "--dir_test_txt")


@pytest.mark.parametrize("eval_name", ["valid", "val", "test"])
def test_folder_dataset_and_split_names(tmp_path, eval_name):
    from datasets.image_files import find_eval_split

    root = folder_style(tmp_path, eval_name)
    paths, labels, classes = scan_class_folders(os.path.join(root, "train"))
    assert classes == ["defect_a", "defect_b", "defect_c"]  # sorted names: 'defect_c' (5 images) is class 2
    assert [labels.count(i) for i in range(3)] == [1, 3, 5]
    eval_paths, eval_labels, _ = scan_class_folders(find_eval_split(root), classes)
    assert sorted(eval_labels) == [0, 1, 2] and all(eval_name in p for p in eval_paths)


def test_folder_eval_class_unknown_to_train(tmp_path):
    root = folder_style(tmp_path)
    write_jpeg(os.path.join(root, "valid", "defect_z", "0.jpg"), seed=1)
    with pytest.raises(UsageError, match="defect_z"):
        scan_class_folders(os.path.join(root, "valid"), ["defect_a", "defect_b", "defect_c"])


def test_preflight_reports_missing_files(tmp_path):
    good = tmp_path / "a.jpg"
    good.write_bytes(b"x")
    missing = [str(tmp_path / f"m{i}.jpg") for i in range(7)]
    assert "all 1 listed files" in preflight([("train", [str(good)])])
    with pytest.raises(UsageError) as err:
        preflight([("training images", [str(good)] + missing)])
    message = str(err.value)
    assert "7 of 8 files" in message and missing[0] in message and missing[4] in message
    assert missing[6] not in message  # only the first few are named


def test_inat_list_script(tmp_path):
    train = {"images": [{"id": 1, "file_name": "train_val2018/Plantae/7291/abc.jpg"},
                        {"id": 2, "file_name": "train_val2018/Aves/12/def.jpg"}],
             "annotations": [{"image_id": 2, "category_id": 12}, {"image_id": 1, "category_id": 7291}]}
    val = {"images": [{"id": 9, "file_name": "train_val2018/Aves/12/xyz.jpg"}],
           "annotations": [{"image_id": 9, "category_id": 12}]}
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "val.json").write_text(json.dumps(val))
    assert make_inat_lists(["--train_json", str(tmp_path / "train.json"), "--val_json", str(tmp_path / "val.json"),
                            "--out", str(tmp_path / "lists")]) == 0
    assert (tmp_path / "lists" / "iNaturalist18_train.txt").read_text() == (
        "train_val2018/Plantae/7291/abc.jpg 7291\ntrain_val2018/Aves/12/def.jpg 12\n")
    assert (tmp_path / "lists" / "iNaturalist18_val.txt").read_text() == "train_val2018/Aves/12/xyz.jpg 12\n"


def test_released_warmup_runs_one_epoch_late():
    """Learning rates for --lr 0.1 over 135 epochs, typed from the released rule: (e + 1) / 10 of the
    base rate while e <= 10, then 0.5 * (1 + cos(pi * (e - 9) / 126)); the released code applies the
    rule for e after epoch e, so epoch k runs at rule(k - 1), epoch 0 at the base rate."""
    late, on_time = WarmupCosineFactor(135, late=True), WarmupCosineFactor(135, late=False)
    expected_late = {0: 0.1, 1: 0.01, 2: 0.02, 11: 0.11, 12: 0.0999378461, 134: 6.2153939e-05}
    expected_on_time = {0: 0.01, 5: 0.06, 10: 0.11, 11: 0.0999378461, 134: 1.5540900e-05}
    assert {k: 0.1 * late(k) for k in expected_late} == pytest.approx(expected_late, rel=1e-6)
    assert {k: 0.1 * on_time(k) for k in expected_on_time} == pytest.approx(expected_on_time, rel=1e-6)


@pytest.mark.parametrize("classes", [1000, 8142])
def test_resnext50_matches_released_layout(classes):
    layout = released_layout()[f"resnext50_32x4d/{classes}"]
    model = build_model("resnext50_32x4d", classes)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == layout["state_dict"]
    assert count_parameters(model) == layout["params"]


def run(args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


SMALL = ["-a", "resnet32", "--width", "8", "--image_size", "32", "-j", "0", "--epochs", "1", "-b", "4",
         "--no_tensorboard"]


@pytest.mark.slow
def test_imagenet_lt_list_end_to_end(tmp_path):
    root, train_txt, test_txt = imagenet_style(tmp_path)
    lists = ["--dataset", "ImageNet-LT", "--num_classes", "4", "--root", root, "--dir_train_txt", train_txt,
             "--dir_test_txt", test_txt]
    out = run(["main.py", *lists, *SMALL, "--lr", "0.1", "--root_log", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stderr
    assert "preflight: all 21 listed files exist" in out.stdout and "[6, 4, 2, 1]" in out.stdout
    (run_dir,) = os.listdir(tmp_path / "runs")
    ckpt = tmp_path / "runs" / run_dir / "ckpt.pth.tar"
    out = run(["test.py", *lists, "-a", "resnet32", "--width", "8", "--image_size", "32", "-j", "0",
               "--resume", str(ckpt)])
    assert out.returncode == 0, out.stderr
    assert "8 images" in out.stdout


@pytest.mark.slow
def test_nepes_tree_end_to_end(tmp_path):
    root = folder_style(tmp_path, "val")
    out = run(["main.py", "--dataset", "nepes", "--num_classes", "3", "--root", root, *SMALL,
               "--root_log", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    meta = json.loads((tmp_path / "runs" / run_dir / "args.json").read_text())
    assert meta["class_names"] == ["defect_a", "defect_b", "defect_c"] and meta["train_counts"] == [1, 3, 5]
    out = run(["test.py", "--dataset", "folder", "--root", root, "-a", "resnet32", "--width", "8",
               "--image_size", "32", "-j", "0", "--resume", str(tmp_path / "runs" / run_dir / "ckpt.pth.tar")])
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_undecodable_image_stops_or_is_skipped(tmp_path):
    root, train_txt, test_txt = imagenet_style(tmp_path)
    broken = os.path.join(root, "train/n00000000/n00000000_3.JPEG")
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")
    lists = ["--dataset", "ImageNet-LT", "--num_classes", "4", "--root", root, "--dir_train_txt", train_txt,
             "--dir_test_txt", test_txt, *SMALL]
    out = run(["main.py", *lists, "--root_log", str(tmp_path / "a")])
    assert out.returncode == 2 and broken in out.stderr and "Traceback" not in out.stderr
    out = run(["main.py", *lists, "--root_log", str(tmp_path / "b"), "--skip_bad_images"])
    assert out.returncode == 0, out.stderr
    # the uniform loader meets the broken image once; the re-sampler may draw it too
    skipped = int(out.stdout.split(" undecodable training images skipped")[0].split()[-1])
    assert skipped >= 1


@pytest.mark.slow
def test_list_data_set_missing_images_stop_before_training(tmp_path):
    root, train_txt, test_txt = imagenet_style(tmp_path)
    os.remove(os.path.join(root, "val/ILSVRC2012_val_2_1.JPEG"))
    out = run(["main.py", "--dataset", "ImageNet-LT", "--num_classes", "4", "--root", root, "--dir_train_txt",
               train_txt, "--dir_test_txt", test_txt, *SMALL, "--root_log", str(tmp_path / "runs")])
    assert out.returncode == 2 and "1 of 8 files" in out.stderr and "ILSVRC2012_val_2_1" in out.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_lists_default_to_data_txt_inside_the_root(tmp_path):
    from datasets import build_data

    root, train_txt, test_txt = imagenet_style(tmp_path)
    os.makedirs(os.path.join(root, "data_txt"))
    shutil.copy(train_txt, os.path.join(root, "data_txt", "ImageNet_LT_train.txt"))
    shutil.copy(test_txt, os.path.join(root, "data_txt", "ImageNet_LT_test.txt"))
    args = argparse.Namespace(dataset="ImageNet-LT", root=root, dir_train_txt=None, dir_test_txt=None,
                              num_classes=4, image_size=32, skip_bad_images=False)
    data = build_data(args)
    assert data.train_counts == [6, 4, 2, 1] and len(data.test) == 8


@pytest.mark.parametrize("given,name", [
    ("cifar-10", "cifar10"), ("CIFAR100", "cifar100"), ("imagenet_lt", "ImageNet-LT"),
    ("iNaturalist2018", "iNaturelist2018"), ("inat2018", "iNaturelist2018"), ("NEPES", "nepes"), ("Folder", "folder")])
def test_data_set_names_in_natural_spellings(given, name):
    import main

    assert main.get_args_parser().parse_args(["--dataset", given]).dataset == name


def test_unknown_data_set_name_lists_the_known_ones(capsys):
    import main

    with pytest.raises(SystemExit) as exit_:
        main.get_args_parser().parse_args(["--dataset", "mnist"])
    assert exit_.value.code == 2 and "unknown data set 'mnist'" in capsys.readouterr().err


def list_args(root, train_txt, test_txt, **kw):
    return argparse.Namespace(**{**dict(dataset="ImageNet-LT", root=root, dir_train_txt=train_txt,
                                        dir_test_txt=test_txt, num_classes=None, image_size=32,
                                        skip_bad_images=False), **kw})


def test_num_classes_must_match_the_labels_of_the_lists(tmp_path):
    from datasets import build_data

    root, train_txt, test_txt = imagenet_style(tmp_path)  # labels 0..3
    with pytest.raises(UsageError, match="--num_classes 8142 .given. does not match the lists .* 4 classes"):
        build_data(list_args(root, train_txt, test_txt, num_classes=8142))
    with pytest.raises(UsageError, match="--num_classes 1000 .ImageNet-LT's. does not match"):
        build_data(list_args(root, train_txt, test_txt))


def test_a_class_without_training_images_stops_unless_allowed(tmp_path, capsys):
    from datasets import build_data

    root, train_txt, test_txt = imagenet_style(tmp_path, counts=(6, 0, 2, 3))
    with pytest.raises(UsageError, match="1 class without a training image: 1. .*--allow_empty_classes"):
        build_data(list_args(root, train_txt, test_txt, num_classes=4))
    data = build_data(list_args(root, train_txt, test_txt, num_classes=4, allow_empty_classes=True))
    assert data.train_counts == [6, 0, 2, 3]
    assert "2 classes with fewer than 5 training images: 2: 2, 3: 3" in capsys.readouterr().err
