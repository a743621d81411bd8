"""The tensor data path, AMP / channels_last on the CPU, and a 2-process torchrun (gloo) run."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import main as train_script
from datasets.tensor_path import Normalize, TensorTestLoader, TensorTrainLoader, crop_flip, draw_crop_flip
from tests.conftest import ROOT, write_cifar

TINY = ["--dataset", "cifar10", "-a", "resnet32", "--width", "8", "--imbanlance_rate", "0.1", "-j", "0",
        "--no_download", "--no_tensorboard", "-b", "16", "-p", "100"]


def test_crops_and_flips_equal_a_numpy_reference(device):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
    top, left = torch.tensor([0, 8, 3, 4, 8, 1]), torch.tensor([0, 8, 5, 0, 2, 7])
    flip = torch.tensor([False, True, True, False, False, True])
    out = crop_flip(torch.from_numpy(images).to(device), top.to(device), left.to(device), flip.to(device)).cpu().numpy()
    top, left = top.tolist(), left.tolist()
    for i in range(6):
        padded = np.pad(images[i], ((0, 0), (4, 4), (4, 4)))
        expected = padded[:, top[i]:top[i] + 32, left[i]:left[i] + 32]
        if flip[i]:
            expected = expected[:, :, ::-1]
        assert np.array_equal(out[i], expected), i


def test_normalisation_matches_to_tensor_then_normalize():
    from torchvision.transforms import functional as TF

    image = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.44), (0.25, 0.24, 0.26)
    expected = TF.normalize(image[0].float() / 255.0, mean, std)
    assert torch.allclose(Normalize(mean, std, torch.device("cpu"))(image)[0], expected, atol=1e-5)


def test_offsets_and_flips_are_uniform():
    gen = torch.Generator().manual_seed(1234)
    top, left, flip = draw_crop_flip(81 * 400, gen)
    counts = torch.bincount(top * 9 + left, minlength=81).double()
    expected = len(top) / 81
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 124.0  # 99.9th percentile of chi-square with 80 degrees of freedom
    p = flip.double().mean().item()
    assert abs(p - 0.5) < 3.3 * math.sqrt(0.25 / len(flip))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("speed") / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    return root


def one_epoch(data_root, folder, extra):
    """(epoch record, checkpoint) of a one-epoch tiny run with `extra` flags."""
    train_script.main(train_script.get_args_parser().parse_args(
        TINY + ["--root", data_root, "--epochs", "1", "--root_log", str(folder)] + extra))
    (run,) = os.listdir(folder)
    record = json.loads((folder / run / "metrics.jsonl").read_text().splitlines()[-1])
    return record, torch.load(folder / run / "ckpt.pth.tar", weights_only=False)


@pytest.mark.parametrize("extra", [["--amp", "bf16"], ["--amp", "fp16"], ["--channels_last"],
                                   ["--amp", "bf16", "--channels_last"]])
@pytest.mark.slow
def test_amp_and_channels_last_take_effect(data_root, tmp_path, extra):
    """bf16/fp16 change the losses (rounding; fp16's gradient scaler also skips the first steps, whose
    scaled gradients overflow) but keep them finite, bf16 close to fp32; channels_last leaves the
    losses as they are and stores the convolution weights in that layout."""
    reference, _ = one_epoch(data_root, tmp_path / "fp32", [])
    record, checkpoint = one_epoch(data_root, tmp_path / "run", extra)
    terms = ("loss", "balance", "rebalance", "consistency")
    assert all(math.isfinite(record[k]) for k in terms)
    conv = checkpoint["state_dict"]["conv1.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last) == ("--channels_last" in extra)
    if "--amp" in extra:
        assert record["balance"] != reference["balance"]
        if "bf16" in extra:
            assert record["balance"] == pytest.approx(reference["balance"], rel=0.05)
    else:
        assert record["balance"] == pytest.approx(reference["balance"], rel=1e-3)  # rounding, over 5 steps


def crop_flip_variants(image_hwc: np.ndarray, mean, std) -> torch.Tensor:
    """The 162 normalised views the training transform can make of one image: 9 x 9 crop offsets of
    the zero-padded image, each mirrored or not (written out with numpy, independently of the code)."""
    padded = np.pad(image_hwc.transpose(2, 0, 1), ((0, 0), (4, 4), (4, 4)))
    crops = [padded[:, t:t + 32, l:l + 32] for t in range(9) for l in range(9)]
    crops += [c[:, :, ::-1] for c in crops]
    x = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_tensor_path_views_are_crops_and_flips_of_the_sampled_images(data_root):
    """Each view is one of the 162 crop/flip variants of its own source image, and the batches hold
    the images and labels that the PIL path's samplers pick."""
    from datasets import build_data, build_loaders
    from datasets.transforms import CIFAR_STATS

    args = train_script.get_args_parser().parse_args(TINY + ["--root", data_root])
    data = build_data(args)
    args.data_path = "pil"
    pil_batches = list(build_loaders(data, args, torch.device("cpu"))[0].epoch(1))
    args.data_path = "tensor"
    loader = build_loaders(data, args, torch.device("cpu"))[0]
    tensor_batches = list(loader.epoch(1))
    orders = [sampler.indices() for sampler in loader.samplers]  # epoch 1 is set by the pass above
    variants = [crop_flip_variants(image, *CIFAR_STATS["cifar10"]) for image in data.train.images]
    assert len(pil_batches) == len(tensor_batches) > 1
    for step, (pil, tensor) in enumerate(zip(pil_batches, tensor_batches)):
        for part, (((_, _), y_pil), ((v1, v2), y_tensor)) in enumerate(zip(pil, tensor)):
            assert torch.equal(y_pil, y_tensor)
            sources = orders[part][step * 16:(step + 1) * 16].tolist()
            assert [data.train.targets[i] for i in sources] == y_tensor.tolist()
            for view in (v1, v2):
                for image, source in zip(view, sources):
                    distance = (variants[source] - image).abs().flatten(1).max(dim=1).values
                    assert distance.min() < 1e-5, (step, part, source)


def torchrun(args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "main.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.slow
def test_two_process_gloo_run(data_root, tmp_path):
    out = torchrun(TINY + ["--root", data_root, "--epochs", "1", "--root_log", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stderr[-3000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1  # one run folder, written by rank 0 only
    run_dir = tmp_path / "runs" / runs[0]
    assert sorted(n for n in os.listdir(run_dir) if n.endswith(".pth.tar")) == ["ckpt.best.pth.tar", "ckpt.pth.tar"]
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["test_images"] == 30  # every test image counted once across the two processes
    assert json.loads((run_dir / "args.json").read_text())["world_size"] == 2

    # The DDP checkpoint evaluates in a single process ...
    report = tmp_path / "r.json"
    single = subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), *TINY[:10], "--root", data_root,
                             "--resume", str(run_dir / "ckpt.pth.tar"), "--json", str(report)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    assert json.loads(report.read_text())["top1"] == pytest.approx(record["top1"])
    # ... but a single-process checkpoint (stopped by SIGTERM after epoch 1 of 2) does not resume under torchrun:
    # the number of processes defines the run (per-process batches, shards, BatchNorm statistics).
    real_evaluate = train_script.evaluate

    def evaluate_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*a, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_script, "evaluate", evaluate_then_signal)
        with pytest.raises(train_script.RunStopped):
            train_script.main(train_script.get_args_parser().parse_args(
                TINY + ["--root", data_root, "--epochs", "2", "--root_log", str(tmp_path / "single")]))
    (single_run,) = os.listdir(tmp_path / "single")
    out = torchrun(TINY + ["--root", data_root, "--epochs", "2", "--resume", str(tmp_path / "single" / single_run)])
    assert out.returncode != 0 and "trained by 1 process and this resume has 2" in out.stderr
    lines = (tmp_path / "single" / single_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


@pytest.mark.slow
def test_batch_must_split_across_processes(data_root, tmp_path):
    out = torchrun(TINY[:-4] + ["-b", "15", "-p", "100", "--root", data_root, "--epochs", "1",
                                "--root_log", str(tmp_path)])
    assert out.returncode != 0 and "not divisible by the 2 processes" in out.stderr


def test_tensor_test_loader_gives_every_test_image_in_order():
    images = np.random.RandomState(1).randint(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loader = TensorTestLoader(images, list(range(10)), torch.device("cpu"), mean, std, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b for b, _ in batches])
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5) and torch.cat([y for _, y in batches]).tolist() == list(range(10))
    shard = TensorTestLoader(images, list(range(10)), torch.device("cpu"), mean, std, 4, indices=range(1, 10, 2))
    assert torch.cat([y for _, y in shard]).tolist() == [1, 3, 5, 7, 9]


def test_tensor_train_loader_with_one_view_and_no_partner():
    """The cross-entropy baseline: one view of the uniform batch only; by default one process, all images."""
    images = np.random.RandomState(2).randint(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    targets = [c for c in range(4) for _ in range(5)]
    loader = TensorTrainLoader(images, targets, [5] * 4, 8, None, 0, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3,
                               views=1)
    batches = list(loader.epoch(0))
    assert len(loader) == 3 and all(len(batch) == 1 for batch in batches)
    assert [tuple(x.shape) for ((x, _),) in batches] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    assert sorted(torch.cat([y for ((_, y),) in batches]).tolist()) == targets
    two_views = TensorTrainLoader(images, targets, [5] * 4, 8, 0.0, 0, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3)
    ((a1, a2), y), ((b1, b2), y_b) = next(iter(two_views.epoch(0)))  # default: two views, with a partner batch
    assert a1.shape == a2.shape == b1.shape == b2.shape == (8, 3, 32, 32) and not torch.equal(a1, a2)
