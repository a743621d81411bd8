import os

import pytest
import torch

from models import build_model
from utils import checkpoint as ckpt_mod
from utils.checkpoint import load_weights, read_checkpoint, save_checkpoint, strip_prefixes
from utils.errors import EXIT_WRITE_FAILED, UsageError, WriteFailed


def test_strip_prefixes():
    sd = {"module.a": 1, "_orig_mod.b": 2, "module._orig_mod.c": 3, "d": 4}
    assert strip_prefixes(sd) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_best_and_every_twenty_epochs(tmp_path):
    for epoch, best in [(19, True), (20, False), (21, False), (40, True)]:
        save_checkpoint({"epoch": epoch, "state_dict": {}, "best_acc1": 0.0}, str(tmp_path), best)
    assert sorted(os.listdir(tmp_path)) == ["20_ckpt.pth.tar", "40_ckpt.pth.tar", "ckpt.best.pth.tar", "ckpt.pth.tar"]
    assert torch.load(tmp_path / "ckpt.pth.tar")["epoch"] == 40
    assert torch.load(tmp_path / "20_ckpt.pth.tar")["epoch"] == 20


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"epoch": 1, "state_dict": {}, "best_acc1": 1.0}, str(tmp_path), False)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(WriteFailed) as failed:
        save_checkpoint({"epoch": 2, "state_dict": {}, "best_acc1": 2.0}, str(tmp_path), False)
    monkeypatch.undo()
    assert failed.value.exit_code == EXIT_WRITE_FAILED == 4
    assert str(tmp_path / "ckpt.pth.tar") in str(failed.value) and "No space left" in str(failed.value)
    assert read_checkpoint(str(tmp_path / "ckpt.pth.tar"))["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]


def test_bare_state_dict_and_mismatch_message(tmp_path):
    model = build_model("resnet32", 10, width=16)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "bare.pth")
    loaded = read_checkpoint(str(tmp_path / "bare.pth"))
    load_weights(build_model("resnet32", 10, width=16), loaded["state_dict"], "bare.pth")
    with pytest.raises(UsageError) as err:
        load_weights(build_model("resnet32", 100, width=16), loaded["state_dict"], "bare.pth")
    assert "fc_cb.weight" in str(err.value) and "10 classes" in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="junk.pth"):
        read_checkpoint(str(tmp_path / "junk.pth"))


def test_each_checkpoint_name_is_a_file_of_its_own(tmp_path):
    """Not hard links: one write into a copy in place (a user's torch.save(..., 'ckpt.best.pth.tar'), or a cp
    over it) changes that name only."""
    save_checkpoint({"epoch": 20, "state_dict": {"w": torch.ones(2)}}, str(tmp_path), is_best=True)
    latest, best, copy = tmp_path / "ckpt.pth.tar", tmp_path / "ckpt.best.pth.tar", tmp_path / "20_ckpt.pth.tar"
    assert len({os.stat(p).st_ino for p in (latest, best, copy)}) == 3
    with open(best, "r+b") as f:
        f.write(b"PK\x03\x04 overwritten")
    assert read_checkpoint(str(latest))["epoch"] == 20 and read_checkpoint(str(copy))["epoch"] == 20


def test_the_best_copy_stays_when_the_next_epoch_is_not_best(tmp_path):
    save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(2)}}, str(tmp_path), is_best=True)
    latest, best = tmp_path / "ckpt.pth.tar", tmp_path / "ckpt.best.pth.tar"
    save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(2)}}, str(tmp_path), is_best=False)
    assert torch.load(best, weights_only=False)["epoch"] == 1 and torch.load(latest, weights_only=False)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt.best.pth.tar", "ckpt.pth.tar"]


def test_background_writer_saves_a_snapshot_then_runs_after_and_reports_failures(tmp_path, monkeypatch):
    order = []
    weights = torch.ones(3)
    writer = ckpt_mod.BackgroundWriter()
    writer.save({"epoch": 1, "state_dict": {"w": weights}}, str(tmp_path), is_best=False,
                after=lambda: order.append(torch.load(tmp_path / "ckpt.pth.tar", weights_only=False)["epoch"]))
    weights.mul_(5)  # training goes on at once: the checkpoint keeps the values of the moment of saving
    writer.wait()
    assert torch.equal(torch.load(tmp_path / "ckpt.pth.tar", weights_only=False)["state_dict"]["w"], torch.ones(3))
    assert order == [1]  # `after` ran once the checkpoint was on disk

    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    writer.save({"epoch": 2, "state_dict": {"w": weights}}, str(tmp_path), is_best=False, after=lambda: order.append(2))
    with pytest.raises(WriteFailed, match="No space left on device"):
        writer.wait()
    assert order == [1] and torch.load(tmp_path / "ckpt.pth.tar", weights_only=False)["epoch"] == 1
