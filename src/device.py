"""Where a run computes: CUDA when present (or asked for), else the CPU."""

from __future__ import annotations

import logging
import os

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


def configure_threads(threads: int | None, parallel_jobs: int = 1) -> int:
    """Set torch's intra-op threads: `threads` if given, else the machine's cores shared among parallel jobs.

    One run takes every core; when a launcher runs N jobs at once each takes cores // N (at least 1), so jobs
    times threads never oversubscribes the machine.
    """
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, parallel_jobs))
    torch.set_num_threads(threads)
    return threads
