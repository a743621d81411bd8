"""The memory a training step needs, estimated before a run starts, from the tensors autograd keeps.

The network runs one forward pass on PyTorch's `meta` device (shapes only: no memory and no
arithmetic, under a second even for ResNeXt-50 at 224 px) inside `saved_tensors_hooks`, which is
handed every tensor autograd saves for the backward pass; each storage is counted once, and the
parameters and buffers (which layers also save) are left to the last term. Then

    saved activations per image x images forwarded per step (GLMC: both mixes of the batch; CE: one view)
  + the step's other input images (GLMC: the four views the mixes are made of)
  + parameters, their gradients and the SGD momentum (three fp32 copies)

is the estimate. The images per step are those a step really sees: the per-process batch, at
most the process's share of the training set. With --amp the pass runs in the half-precision
type, as autocast runs the convolutions and matrix products; --channels_last changes the layout
of the same tensors, not their size, so the estimate is the same. Left out: the CUDA context
(about 0.5 GB, outside PyTorch's allocator), cuDNN workspaces and the caching allocator's slack.
--compile gets the eager estimate: fused kernels save fewer tensors, but the process also holds
the compiler's own state, and measured on the CPU the compiled peak stays above the estimate, so
it is a floor there too. bench/memory_estimate.py sets the estimate beside measured peaks (eager,
--amp bf16 --channels_last, --compile).

The estimate informs: a dry run prints it with the verdict for this machine's device and the
smallest usual GPU that holds it, and goes on; only a real run that would not fit stops, before
anything is written, unless --no_memory_check.
"""
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from utils.errors import UsageError
from utils.speed import AMP_DTYPES

GB = 1e9
CUDA_CONTEXT = int(0.5 * GB)  # outside PyTorch's allocator, on every GPU process
USUAL_GPU_GB = (8, 12, 16, 24, 32, 40, 48, 80, 96, 141, 192)  # memory of the usual data-centre and desk GPUs
GPU_USABLE = 0.95  # of a card's nominal GiB, after the allocator's slack


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


def step_images(batch_size: int, world_size: int, train_images: Optional[int] = None) -> int:
    """Images one process's step holds at most: its share of the global batch, and never more than its
    share of the training set (a batch larger than the data set is as large as the data set)."""
    share = batch_size // world_size
    return share if train_images is None else max(1, min(share, math.ceil(train_images / world_size)))


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


def smallest_gpu(estimate: MemoryEstimate) -> str:
    """The smallest usual GPU that holds the estimate (plus the CUDA context), in words."""
    need = estimate.total + CUDA_CONTEXT
    size = next((g for g in USUAL_GPU_GB if need <= GPU_USABLE * g * 2 ** 30), None)
    if size is None:
        return f"more than a {USUAL_GPU_GB[-1]} GB GPU holds"
    return f"fits a GPU with {size} GB or more"


def memory_verdict(estimate: MemoryEstimate, device: torch.device) -> Tuple[bool, str]:
    """(whether the estimate fits `device`, the verdict in one line: this device's memory and the smallest
    usual GPU that would hold the run), e.g. 'fits a GPU with 32 GB or more; this machine's CPU has 25.3 GB,
    so it would not fit here'."""
    available = device_memory(device)
    where = (f"GPU {device.index} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else "this machine's CPU")
    fits = estimate.total <= available
    return fits, (f"{smallest_gpu(estimate)}; {where} has {available / GB:.1f} GB, so it "
                  + ("fits here" if fits else "would not fit here"))


def check_fits(estimate: MemoryEstimate, device: torch.device, advice: str) -> None:
    """Stop (exit 2) before anything is written when the estimate exceeds the memory of `device`."""
    fits, verdict = memory_verdict(estimate, device)
    if not fits:
        raise UsageError(f"{estimate.describe()}: {verdict} (the run would stop out of memory). {advice}; or, if "
                         "you know better, --no_memory_check starts it all the same")
