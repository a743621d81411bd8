"""Every random state of a run, for seeding and for exact resume."""
import random
from typing import Dict

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states(device: torch.device) -> Dict:
    """The global generators' states; of the CUDA generators only that of the run's device."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng_states(states: Dict, device: torch.device) -> None:
    """Restore `rng_states`. The CUDA state goes to the run's device only; an older checkpoint's list
    of every visible device's state gives the entry of the same index, else the first, so a run
    written on a machine with more GPUs resumes on one with fewer."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        if not cuda:
            return
        cuda = cuda[device.index] if device.index is not None and device.index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)
