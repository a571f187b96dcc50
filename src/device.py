"""Where a run computes: CUDA when present (or asked for), else the CPU."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


def select_device(requested: str) -> torch.device:
    """`auto` takes CUDA when available and says so when it falls back to the CPU; `cuda` insists on it."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
        return torch.device("cuda")
    if requested == "auto":
        log.info("CUDA is not available: training on the CPU with %d threads", torch.get_num_threads())
    return torch.device("cpu")
