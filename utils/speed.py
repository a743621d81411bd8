"""Mixed precision, channels_last and DistributedDataParallel wrapping (torch.compile: glmc/train_step.py)."""
import contextlib
from typing import Optional

import torch
from torch import nn

from utils.distributed import World

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: str, device: torch.device):
    """The forward-pass context for `--amp` (losses are computed in fp32 inside it)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def prepare_model(model: nn.Module, device: torch.device, world: World, channels_last: bool = False,
                  sync_bn: bool = False, find_unused: bool = False) -> nn.Module:
    """Move to `device`, then optionally SyncBatchNorm, channels_last and DDP (torchrun)."""
    if sync_bn and world.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if world.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused)
    return model
