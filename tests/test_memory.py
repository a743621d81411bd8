"""The training-memory estimate: hand-counted saved tensors, and the refusal before a run that cannot fit."""
import pytest
import torch
from torch import nn

import main as train_script
from tests.conftest import TINY_TRAIN
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


def test_a_run_that_cannot_fit_stops_before_anything_is_written(tmp_path, data_root, monkeypatch, capsys):
    from utils.config import run_cli
    monkeypatch.setattr(memory, "device_memory", lambda device: 10 ** 6)  # a 1 MB machine
    with pytest.raises(SystemExit) as exc:
        run_cli(train_script.main_seeds, train_script.get_args_parser(),
                TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--root_log", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "estimated training memory per step" in err and "0.0 GB" in err
    assert "Lower -b" in err and not (tmp_path / "runs").exists()


def test_dry_run_prints_the_estimate(tmp_path, data_root, capsys):
    train_script.main(train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--dry_run", "--root_log", str(tmp_path / "runs")]))
    assert "estimated training memory per step and process:" in capsys.readouterr().out
