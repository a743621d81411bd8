"""Shared fixtures: tiny CIFAR-format pickle releases written to a temp folder, and the devices to test on."""
import json
import os
import pickle
import signal
import subprocess
import sys

# One intra-op thread for the tests and every process they start: tiny work gains nothing from more, and
# on a shared machine more threads make it many times slower (bench/threads.py)
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_cifar(root, dataset="cifar10", train_per_class=20, test_per_class=4, str_keys=False,
                folder_name=None, seed=0, class_names=None):
    """Write a CIFAR release with `train_per_class` images per class, labels interleaved as in the real files;
    with `class_names`, also the release's meta file that holds them."""
    rng = np.random.RandomState(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    folder = os.path.join(root, folder_name or ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"))
    os.makedirs(folder, exist_ok=True)

    def blob(per_class):
        labels = np.tile(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        data = rng.randint(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return data, labels.tolist()

    def dump(name, data, labels):
        entry = {"data": data, label_key: labels, "batch_label": name}
        if not str_keys:
            entry = {k.encode(): v for k, v in entry.items()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)

    if dataset == "cifar10":
        data, labels = blob(train_per_class)
        for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
            dump(f"data_batch_{i + 1}", data[part], [labels[j] for j in part])
        dump("test_batch", *blob(test_per_class))
    else:
        dump("train", *blob(train_per_class))
        dump("test", *blob(test_per_class))
    if class_names:
        name, key = ("batches.meta", b"label_names") if dataset == "cifar10" else ("meta", b"fine_label_names")
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({key: [n.encode() for n in class_names]}, f, protocol=2)
    return folder


@pytest.fixture
def cifar10_root(tmp_path):
    write_cifar(str(tmp_path / "data"))
    return str(tmp_path / "data")


# A width-8 ResNet-32 on tiny CIFAR-10-LT (IF 10 of 20 per class: 78 images, 5 steps of 16 per epoch).
TINY_DATA = ["--dataset", "cifar10", "-a", "resnet32", "--width", "8", "--imbanlance_rate", "0.1", "-j", "0",
             "--no_download"]
TINY_TRAIN = TINY_DATA + ["--no_tensorboard", "-b", "16", "--lr", "0.05", "-p", "1"]


@pytest.fixture
def data_root(tmp_path):
    """Tiny CIFAR-10 release: 20 training and 3 test images per class."""
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    return root


def cli(script, argv, capsys):
    """Run a script's command line in this process: (exit code, stdout, stderr). `script` is main, test
    or the MaxNorm stage's module."""
    from utils.config import run_cli
    entry = script.main_seeds if hasattr(script, "main_seeds") else script.main
    code = 0
    try:
        run_cli(entry, script.get_args_parser(), argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def sigterm_when(cmd, prefix, **popen_kw):
    """Run `cmd`, send it SIGTERM when a stdout line starts with `prefix`; (exit code, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kw)
    for line in proc.stdout:
        if line.startswith(prefix):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err



def stop_after_epoch_one(monkeypatch, argv):
    """Train the tiny run `argv` (after TINY_TRAIN) until a SIGTERM arriving during epoch 1's evaluation stops it
    at the epoch boundary; returns the RunStopped. `monkeypatch` may be a `pytest.MonkeyPatch.context()`."""
    import main as train_script

    real_evaluate = train_script.evaluate

    def evaluate_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(train_script, "evaluate", evaluate_then_signal)
    with pytest.raises(train_script.RunStopped) as stopped:
        train_script.main(train_script.get_args_parser().parse_args(TINY_TRAIN + list(argv)))
    monkeypatch.setattr(train_script, "evaluate", real_evaluate)
    return stopped.value


def released_layout():
    """{'arch/num_classes': {'params': count, 'state_dict': {name: shape}}} of the released code's networks."""
    with open(os.path.join(ROOT, "tests", "data", "released_checkpoint_layout.json")) as f:
        return json.load(f)["layouts"]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=CUDA)])
def device(request):
    """Each device present: the CPU always, CUDA when there is a GPU (skipped, and shown so, otherwise)."""
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a network or starts a process (leave out with -m 'not slow')")
