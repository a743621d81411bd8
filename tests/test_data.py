import os
import time
import pickle

import numpy as np
import pytest
import torch

from datasets.cifar_lt import (find_cifar_folder, img_num_per_class, load_cifar_lt, read_class_names,
                               select_long_tailed)
from datasets.loaders import EpochSampler, ImageArrayDataset, TrainLoader, resample_weights
from datasets.transforms import TwoViews, cifar_train_transform
from tests.conftest import write_cifar
from utils.errors import UsageError


@pytest.mark.parametrize("rate,counts", [
    (0.01, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),  # CIFAR-10-LT IF 100
    (0.02, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]),  # IF 50
    (0.1, [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]),  # IF 10
])
def test_cifar10_counts_are_the_published_ones(rate, counts):
    assert img_num_per_class(5000, 10, rate) == counts


@pytest.mark.parametrize("rate,total,head,tail", [
    (0.01, 10847, [500, 477, 455], [5, 5, 5]),  # CIFAR-100-LT IF 100
    (0.02, 12608, [500, 480, 462], [10, 10, 10]),  # IF 50
    (0.1, 19573, [500, 488, 477], [52, 51, 50]),  # IF 10
])
def test_cifar100_totals_are_the_published_ones(rate, total, head, tail):
    counts = img_num_per_class(500, 100, rate)
    assert sum(counts) == total and counts[:3] == head and counts[-3:] == tail


def test_balanced_rate_keeps_every_image():
    assert img_num_per_class(500, 100, 1.0) == [500] * 100


def test_released_selection_matches_numpy_global_generator():
    labels = np.random.RandomState(5).randint(0, 4, size=200)
    counts = [30, 20, 10, 5]
    np.random.seed(3407)  # the released code seeds numpy's global generator, then picks class by class
    expected = np.concatenate([np.random.choice(np.where(labels == c)[0], n, replace=False)
                               for c, n in enumerate(counts)])
    assert np.array_equal(select_long_tailed(labels, counts, "released", 3407), expected)


def test_cao_split_shuffles_each_class_with_seed_zero():
    labels = np.random.RandomState(5).randint(0, 4, size=200)
    counts = [30, 20, 10, 5]
    np.random.seed(0)
    expected = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected.append(idx[:n])
    assert np.array_equal(select_long_tailed(labels, counts, "cao", 3407), np.concatenate(expected))


@pytest.mark.parametrize("str_keys", [False, True])
@pytest.mark.parametrize("folder_name", ["cifar-10-batches-py", "CIFAR-10-batches-py"])
def test_reads_release_with_bytes_or_str_keys_any_case(tmp_path, str_keys, folder_name):
    folder = write_cifar(str(tmp_path), str_keys=str_keys, folder_name=folder_name)
    for root in (str(tmp_path), folder):  # the parent or the batches folder itself
        assert find_cifar_folder(root, "cifar10") == folder
        arrays = load_cifar_lt(root, "cifar10", 0.1, "released", 1, download=False)
        assert np.bincount(arrays["train"].labels).tolist() == img_num_per_class(20, 10, 0.1)
        assert np.bincount(arrays["test"].labels).tolist() == [4] * 10
        assert arrays["train"].images.shape[1:] == (32, 32, 3) and arrays["train"].images.dtype == np.uint8


def test_images_keep_channel_layout(tmp_path):
    folder = write_cifar(str(tmp_path))
    import pickle
    with open(f"{folder}/test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    arrays = load_cifar_lt(str(tmp_path), "cifar10", 1.0, "released", 1, download=False)
    first = raw[b"data"][0]
    # CIFAR rows are channel-major: 1024 red, 1024 green, 1024 blue values.
    assert arrays["test"].images[0, 0, 1, 0] == first[1]
    assert arrays["test"].images[0, 0, 0, 2] == first[2048]
    assert arrays["test"].images[0, 1, 0, 1] == first[1024 + 32]


def test_cifar100_and_balanced_rate(tmp_path):
    write_cifar(str(tmp_path), dataset="cifar100", train_per_class=6, test_per_class=2)
    arrays = load_cifar_lt(str(tmp_path), "cifar100", 1.0, "released", 1, download=False)
    assert np.bincount(arrays["train"].labels).tolist() == [6] * 100
    assert len(arrays["test"].labels) == 200


def test_missing_data_message_shows_layout(tmp_path):
    with pytest.raises(UsageError) as err:
        load_cifar_lt(str(tmp_path), "cifar10", 0.01, "released", 1, download=False)
    assert "cifar-10-batches-py" in str(err.value) and "data_batch_1" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_resample_weights_follow_class_power():
    targets = [0] * 8 + [1] * 2
    w = resample_weights(targets, [8, 2], power=1.0)
    class_w = np.array([8 ** -1.0, 2 ** -1.0])
    class_w = class_w / class_w.sum() * 2
    assert torch.allclose(w, torch.tensor(class_w[targets]))


def test_paired_loader_yields_two_views_and_resamples_tail():
    images = np.random.RandomState(0).randint(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0] * 90 + [1] * 10)
    ds = ImageArrayDataset(images, labels, TwoViews(cifar_train_transform("cifar10")))
    loader = TrainLoader(ds, [90, 10], batch_size=100, resample_power=1.0, workers=0, seed=0)
    assert len(loader) == 1
    (((v1, v2), y), ((p1, p2), y_b)), = list(loader.epoch(0))
    assert v1.shape == v2.shape == p1.shape == (100, 3, 32, 32) and not torch.equal(v1, v2)
    assert sorted(y.tolist()) == sorted(labels.tolist())  # the uniform loader sees every image once
    draws = torch.cat([pair[1][1] for e in range(20) for pair in loader.epoch(e)])
    # q = 1 gives both classes equal total weight: about half the partner draws from the tail class.
    assert 0.4 < draws.float().mean().item() < 0.6


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_skips_exactly():
    s = EpochSampler(50, seed=3, stream=0)
    s.set_epoch(4)
    full = list(s)  # (index, augmentation seed) pairs
    assert sorted(i for i, _ in full) == list(range(50)) and len({seed for _, seed in full}) == 50
    s.set_epoch(5)
    assert list(s) != full
    s.set_epoch(4, start=20)
    assert list(s) == full[20:] and len(s) == 30
    assert list(EpochSampler(50, seed=3, stream=0)) == list(EpochSampler(50, seed=3, stream=0))
    w = EpochSampler(50, seed=3, stream=1, weights=torch.ones(50, dtype=torch.float64))
    assert len(w.indices()) == 50 and len(set(w.indices().tolist())) < 50  # with replacement


def test_shards_cover_the_epoch_without_overlap():
    shards = [EpochSampler(11, seed=3, stream=0, rank=r, world=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    parts = [s.indices().tolist() for s in shards]
    assert [len(p) for p in parts] == [4, 4, 4]  # padded to 12 by wrapping around
    whole = EpochSampler(11, seed=3, stream=0)
    whole.set_epoch(2)
    order = whole.indices().tolist()
    assert [x for trio in zip(*parts) for x in trio] == order + order[:1]


def test_pil_batches_do_not_depend_on_the_number_of_workers():
    images = np.random.RandomState(0).randint(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0] * 30 + [1] * 10)
    ds = ImageArrayDataset(images, labels, TwoViews(cifar_train_transform("cifar10")))

    def batches(workers):
        loader = TrainLoader(ds, [30, 10], batch_size=8, resample_power=1.0, workers=workers, seed=0)
        return list(loader.epoch(3, skip_batches=1))

    single, pooled = batches(0), batches(2)
    assert len(single) == len(pooled) == 4
    for a, b in zip(single, pooled):
        for (views_a, y_a), (views_b, y_b) in zip(a, b):
            assert torch.equal(y_a, y_b) and all(torch.equal(u, v) for u, v in zip(views_a, views_b))


@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("cifar100", 100)])
def test_class_names_come_from_the_release_meta_file(tmp_path, dataset, classes):
    names = [f"class-{c}" for c in range(classes)]
    folder = write_cifar(str(tmp_path), dataset, train_per_class=1, test_per_class=1, class_names=names)
    assert read_class_names(folder, dataset) == names
    assert load_cifar_lt(str(tmp_path), dataset, 1.0, "released", 1, download=False)["class_names"] == names


@pytest.mark.parametrize("dataset,url", [
    ("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
])
def test_a_missing_release_is_downloaded_from_the_official_address(tmp_path, monkeypatch, dataset, url):
    import torchvision.datasets.utils as tv_utils

    asked = []

    def fake_download(address, download_root, **kw):
        asked.append(address)
        write_cifar(download_root, dataset, train_per_class=2, test_per_class=1)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    arrays = load_cifar_lt(str(tmp_path / "new"), dataset, 1.0, "released", 1)
    assert asked == [url] and len(arrays["train"].labels) == 2 * (10 if dataset == "cifar10" else 100)


def test_two_classes_and_one_class():
    assert img_num_per_class(100, 2, 0.1) == [100, 10] and img_num_per_class(100, 1, 0.1) == [100]


def test_replacement_split_draws_with_replacement_from_the_seeded_global_generator():
    labels = np.random.RandomState(5).randint(0, 3, size=60)
    counts = [15, 10, 5]
    np.random.seed(3407)  # the first release: choice with replacement, class by class
    expected = np.concatenate([np.random.choice(np.where(labels == c)[0], n, replace=True)
                               for c, n in enumerate(counts)])
    assert np.array_equal(select_long_tailed(labels, counts, "replacement", 3407), expected)
    with pytest.raises(ValueError, match=r"^unknown split 'x'; expected one of \('released', 'cao', 'replacement'\)$"):
        select_long_tailed(labels, counts, "x", 1)


def test_split_flag_accepts_the_three_splits_only(capsys):
    import argparse

    from datasets.args import add_data_args

    parser = argparse.ArgumentParser()
    add_data_args(parser)
    assert [parser.parse_args(["--split", s]).split for s in ("released", "cao", "replacement")] == \
        ["released", "cao", "replacement"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--split", "random"])


def test_a_folder_with_only_some_release_files_is_not_the_release(tmp_path):
    folder = write_cifar(str(tmp_path), train_per_class=1, test_per_class=1)
    os.remove(os.path.join(folder, "test_batch"))
    assert find_cifar_folder(folder, "cifar10") is None  # training files without the test file
    assert find_cifar_folder(str(tmp_path), "cifar10") == folder  # the child folder is found by its name


def test_a_pickle_without_labels_is_refused(tmp_path):
    folder = write_cifar(str(tmp_path), train_per_class=1, test_per_class=1)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({b"data": np.zeros((10, 3072), np.uint8)}, f)
    with pytest.raises(UsageError, match="lacks the keys 'data' and 'labels'"):
        load_cifar_lt(str(tmp_path), "cifar10", 1.0, "released", 1, download=False)


def test_a_meta_file_with_the_wrong_number_of_names_is_ignored(tmp_path):
    folder = write_cifar(str(tmp_path), train_per_class=1, test_per_class=1, class_names=["a", "b", "c"])
    assert read_class_names(folder, "cifar10") is None


def test_an_existing_release_is_not_downloaded_again(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    write_cifar(str(tmp_path), train_per_class=1, test_per_class=1)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *a, **kw: pytest.fail("downloaded"))
    assert len(load_cifar_lt(str(tmp_path), "cifar10", 1.0, "released", 1)["train"].labels) == 10


def test_a_release_short_of_images_for_the_counts_is_refused(tmp_path):
    folder = write_cifar(str(tmp_path), train_per_class=4, test_per_class=1)
    path = os.path.join(folder, "data_batch_1")
    entry = pickle.load(open(path, "rb"), encoding="bytes")
    entry[b"labels"] = [1 if y == 0 else y for y in entry[b"labels"]]  # class 0 loses its images here
    pickle.dump(entry, open(path, "wb"))
    with pytest.raises(UsageError, match="which cannot give the long-tailed counts"):
        load_cifar_lt(str(tmp_path), "cifar10", 1.0, "released", 1, download=False)


@pytest.mark.slow
def test_three_processes_downloading_into_one_root_all_read_the_release(tmp_path):
    """Three processes find no CIFAR-10 under one root and download it at once from a local server (slowed,
    so that they overlap): one downloads, the others wait for it, and every one reads the whole release."""
    import http.server
    import subprocess
    import sys
    import tarfile
    import threading
    from tests.conftest import ROOT, write_cifar

    source = tmp_path / "source"
    write_cifar(str(source), train_per_class=10, test_per_class=2)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    requests = []

    class SlowHandler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(archive.parent), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            time.sleep(1.0)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.handle_error = lambda request, address: None  # torchvision's redirect probe hangs up early
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    root = tmp_path / "data"
    script = (f"import sys; sys.path.insert(0, {ROOT!r})\n"
              "import datasets.cifar_lt as c\n"
              f"c.CIFAR_INFO['cifar10']['url'] = {url!r}\n"
              f"d = c.load_cifar_lt({str(root)!r}, 'cifar10', 0.1, 'released', 0)\n"
              "print('train images', len(d['train'].labels))\n")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    finally:
        server.shutdown()
    assert [code for _, _, code in results] == [0, 0, 0], [err for _, err, _ in results]
    assert requests and sum("not found: downloading" in out for out, _, _ in results) == 1  # the others waited
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no lock, no leftovers
    assert sum("waiting: data root" in out for out, _, _ in results) == 2
