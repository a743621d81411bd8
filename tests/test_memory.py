"""The training-memory estimate: hand-counted saved tensors, and the refusal before a run that cannot fit."""
import pytest
import torch
from torch import nn

import main as train_script
from tests.conftest import TINY_TRAIN, cli
from utils import memory


class FlatLinear(nn.Module):
    """x -> V relu(W flatten(x) + b) + c: autograd keeps the input (for W's gradient), the ReLU's output
    (for the ReLU and for V's gradient: one storage) and V (left out: a parameter)."""

    def __init__(self, pixels: int, hidden: int) -> None:
        super().__init__()
        self.lin, self.out = nn.Linear(pixels, hidden), nn.Linear(hidden, hidden)

    def forward(self, x, train=False):
        return self.out(torch.relu(self.lin(x.flatten(1))))


def test_saved_bytes_of_a_hand_counted_network():
    size, hidden = 6, 5
    per_image = (3 * size * size + hidden) * 4  # fp32 input pixels and ReLU outputs
    assert memory.saved_activation_bytes(lambda: FlatLinear(3 * size * size, hidden), size) == per_image
    half = memory.saved_activation_bytes(lambda: FlatLinear(3 * size * size, hidden), size, torch.bfloat16)
    assert half == per_image // 2


def test_estimate_adds_both_mixes_the_views_and_three_copies_of_the_weights():
    size, hidden, batch = 4, 3, 8
    params = 3 * size * size * hidden + hidden + hidden * hidden + hidden
    per_image = (3 * size * size + hidden) * 4
    glmc = memory.estimate_training_memory(lambda: FlatLinear(3 * size * size, hidden), size, batch, glmc=True)
    assert glmc.total == 2 * batch * per_image + 4 * batch * 3 * size * size * 4 + 3 * 4 * params
    ce = memory.estimate_training_memory(lambda: FlatLinear(3 * size * size, hidden), size, batch, glmc=False)
    assert ce.total == batch * per_image + 3 * 4 * params


def test_a_run_that_cannot_fit_stops_before_anything_is_written_unless_told_to_go(tmp_path, data_root, monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(memory, "device_memory", lambda device: 10 ** 6)  # a 1 MB machine
    argv = TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--root_log", str(tmp_path / "runs")]
    code, _, err = cli(train_script, argv, capsys)
    assert code == 2 and "estimated training memory per step" in err and "has 0.0 GB" in err
    assert "would not fit here" in err and "Lower -b" in err and "--no_memory_check starts it" in err
    assert not (tmp_path / "runs").exists()
    code, out, err = cli(train_script, argv + ["--no_memory_check"], capsys)
    assert code == 0, err
    assert "would not fit here; --no_memory_check" in out and "done: best top-1" in out


def test_a_dry_run_informs_and_goes_on_with_its_other_checks(tmp_path, data_root, monkeypatch, capsys):
    """The README's ImageNet-LT command on a login node: the estimate is above this machine's memory, and the
    dry run still checks the data, builds the loaders, and ends with exit 0."""
    monkeypatch.setattr(memory, "device_memory", lambda device: 10 ** 6)
    code, out, err = cli(train_script, TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--dry_run", "--root_log",
                                                     str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert "estimated training memory per step and process:" in out
    assert "fits a GPU with 8 GB or more; this machine's CPU has 0.0 GB, so it would not fit here" in out
    assert "dry run: 5 steps per epoch" in out and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("total_gb,words", [(7.0, "fits a GPU with 8 GB or more"),
                                            (27.6, "fits a GPU with 32 GB or more"),
                                            (41.0, "fits a GPU with 48 GB or more"),
                                            (300.0, "more than a 192 GB GPU holds")])
def test_the_smallest_usual_gpu(total_gb, words):
    """The estimate plus the 0.5 GB CUDA context must fit in 95 % of the card's nominal GiB: 7.5e9 bytes in
    0.95 x 8 GiB = 8.16e9; 28.1e9 is over 0.95 x 24 GiB = 24.48e9 and under 0.95 x 32 GiB = 32.64e9; 41.5e9 is
    over 0.95 x 40 GiB = 40.80e9 and under 0.95 x 48 GiB = 48.96e9; 300.5e9 is over 0.95 x 192 GiB = 195.8e9."""
    estimate = memory.MemoryEstimate(activations_per_image=0, images_forwarded=0, inputs=int(total_gb * 1e9),
                                     weights=0)
    assert memory.smallest_gpu(estimate).startswith(words)


def test_a_step_holds_at_most_the_training_set():
    # -b 1500 over 1 process on 492 images: a step holds 492; over 8 processes, ceil(492 / 8) = 62 each
    assert memory.step_images(1500, 1, 492) == 492
    assert memory.step_images(1500, 8, 492) == 62
    assert memory.step_images(64, 1, 12406) == 64 and memory.step_images(120, 8, 115846) == 15


def test_the_estimate_of_a_batch_larger_than_the_training_set(tmp_path, data_root, capsys):
    code, out, _ = cli(train_script, TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--dry_run", "-b", "100000",
                                                   "--root_log", str(tmp_path / "runs")], capsys)
    # 78 training images (IF 10 of 20 per class): both mixes of 78 images are forwarded, not of 100,000
    assert code == 0 and "x 156 images" in out
    assert "(-b 100000 is more than the 78 training images, so a step holds 78 per process)" in out
