"""The memory a training step needs, estimated before a run starts, from the tensors autograd keeps.

The network runs one forward pass on PyTorch's `meta` device (shapes only: no memory and no
arithmetic, under a second even for ResNeXt-50 at 224 px) inside `saved_tensors_hooks`, which is
handed every tensor autograd saves for the backward pass; each storage is counted once, and the
parameters and buffers (which layers also save) are left to the last term. Then

    saved activations per image x images forwarded per step (GLMC: both mixes of the batch; CE: one view)
  + the step's other input images (GLMC: the four views the mixes are made of)
  + parameters, their gradients and the SGD momentum (three fp32 copies)

is the estimate. With --amp the pass runs in the half-precision type, as autocast runs the
convolutions and matrix products. Left out: the CUDA context (about 0.5 GB, outside PyTorch's
allocator), cuDNN workspaces and the caching allocator's slack; torch.compile usually needs less
(fused kernels save fewer tensors). bench/memory_estimate.py sets the estimate beside a measured peak.
"""
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from utils.errors import UsageError
from utils.speed import AMP_DTYPES

GB = 1e9


def saved_activation_bytes(build: Callable[[], nn.Module], image_size: int, dtype: torch.dtype = torch.float32,
                           batch: int = 2) -> int:
    """Bytes autograd saves for the backward pass of one image through the training forward of the
    network `build()` makes (built and run on the meta device, so nothing is allocated)."""
    with torch.device("meta"):
        model = build().to(dtype).train()
        x = torch.empty(batch, 3, image_size, image_size, dtype=dtype)
    own = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    storages = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in own:
            storages[storage._cdata] = max(storages.get(storage._cdata, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(x, train=True)
    return sum(storages.values()) // batch


@dataclass(frozen=True)
class MemoryEstimate:
    activations_per_image: int  # bytes saved for the backward pass per image forwarded
    images_forwarded: int  # per step and process
    inputs: int  # bytes of the step's input images
    weights: int  # bytes of parameters, gradients and momentum

    @property
    def total(self) -> int:
        return self.activations_per_image * self.images_forwarded + self.inputs + self.weights

    def describe(self) -> str:
        return (f"estimated training memory per step and process: {self.total / GB:.2f} GB (saved activations "
                f"{self.activations_per_image / 2 ** 20:.1f} MB per image x {self.images_forwarded} images, inputs "
                f"{self.inputs / GB:.2f} GB, weights + gradients + momentum {self.weights / GB:.2f} GB; from the "
                "tensors autograd saves in a shape-only forward pass)")


def estimate_training_memory(build: Callable[[], nn.Module], image_size: int, batch: int, glmc: bool,
                             amp: str = "off") -> MemoryEstimate:
    """The estimate for a per-process batch of `batch` images of `image_size` px (GLMC or the CE baseline)."""
    dtype = AMP_DTYPES.get(amp, torch.float32)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build().parameters())
    forwards, views = (2, 4) if glmc else (1, 0)  # GLMC: two mixes of a1, a2, b1, b2; CE: the view is the input
    return MemoryEstimate(saved_activation_bytes(build, image_size, dtype), forwards * batch,
                          views * batch * 3 * image_size ** 2 * 4, 3 * 4 * parameters)


def device_memory(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(estimate: MemoryEstimate, device: torch.device, advice: str) -> None:
    """Stop (exit 2) before anything is written when the estimate exceeds the memory of `device`."""
    available = device_memory(device)
    if estimate.total > available:
        where = (f"GPU {device.index} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                 else "this machine")
        raise UsageError(f"{estimate.describe()}; {where} has {available / GB:.1f} GB, so the run would stop out of "
                         f"memory. {advice}")
