"""Where and how a run computes: the device, CPU threads, the forward pass's precision, torch.compile."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os

import torch

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20
TRIM_THRESHOLD = 1 * 2**30


def select_device(requested: str) -> torch.device:
    """`auto` takes CUDA when available and says so when it falls back to the CPU; `cuda` insists on it."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
        return torch.device("cuda")
    if requested == "auto":
        log.info("CUDA is not available: training on the CPU with %d threads", torch.get_num_threads())
    keep_freed_memory()
    return torch.device("cpu")


def keep_freed_memory() -> None:
    """Let the C allocator keep freed blocks for reuse instead of handing them back to the system (glibc only).

    torch has no caching allocator on the CPU. A LeNet step's activations (several MB each) are above glibc's
    starting mmap threshold, so each was mapped, touched page by page and unmapped again: about 400,000 page
    faults in a first epoch, and on some runs as many in every epoch. Served from the heap and kept there, they
    fault once. Peak memory stays what a step needs; the process just does not shrink between steps.
    """
    with contextlib.suppress(OSError, AttributeError, ValueError):  # no such confstr name (not glibc), no libc.so.6
        if (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def available_cores() -> int:
    """The cores this process may run on: a Slurm job's or a container's allocation, not the whole machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_threads(threads: int | None, parallel_jobs: int = 1) -> int:
    """Set torch's intra-op threads: `threads` if given, else cores // `parallel_jobs` (at least 1), so the jobs a
    launcher runs at once never oversubscribe the machine."""
    if threads is None:
        threads = max(1, available_cores() // max(1, parallel_jobs))
    torch.set_num_threads(threads)
    return threads


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's precision: under bf16, convolutions and matmuls run in bfloat16 while the weights,
    gradients, optimizer and losses stay fp32 (bfloat16 has fp32's range, so no loss scaling is needed)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(model: torch.nn.Module, enabled: bool) -> None:
    """Compile `model` in place when asked: kernels fused once per input shape, paid for by slower first steps.

    In place (`Module.compile`), so the parameters, the optimizer and the checkpoints' keys are the same as
    without it, and a compiled run resumes an eager one's checkpoint and the other way round.
    """
    if enabled:
        log.info("compiling the model with torch.compile (the first steps of training and evaluation are slower)")
        model.compile()
