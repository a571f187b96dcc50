"""`python scripts/bench.py [--repeats N] [--json PATH] [overrides]`: how close an epoch is to the compute floor.

In one process, on the real Fashion-MNIST, with the same model, optimizer, batch size and number of steps, it times
one epoch of:
  - the reference, the usual textbook loop: torchvision's dataset with ToTensor and Normalize, a shuffling
    DataLoader (with 4 worker processes and with none), per-step `.item()` metrics, then the test set the same way;
  - the runner: `src.train.run` with `trainer.epochs=1`, exactly what `python -m src.train` does (training,
    evaluation, TensorBoard logging, lr updates, checkpoint), writing into a temporary folder; its time is the
    run's own `wall_seconds` (the epochs, without loading the data or building the model);
  - the floor: the same forward/backward/optimizer steps on batches already in memory, and nothing else.
The variants take turns within every repeat, so a change in the machine's load hits all of them alike, and the
medians are compared. Then the real command runs twice in a subprocess: once for the start-up (command to the end
of the first optimizer step, with where the time goes) and once for the peak resident memory of a default run.

Overrides apply to every variant (e.g. `trainer.precision=bf16`, `trainer.threads=1`, `data.train_size=4096`).
The table goes to stdout and, as JSON, to `--json`; the last line is
`speedup_vs_reference=<best reference / runner> overhead_vs_floor=<runner / floor>`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from src import REPO_ROOT, data
from src.device import autocast, configure_threads, maybe_compile, select_device
from src.optimizers import build_optimizer
from src.schedules import build_lr_driver
from src.train import run
from src.validation import ConfigError, validate

REFERENCE_WORKERS = (4, 0)
DEFAULT_JSON = REPO_ROOT / "outputs" / "bench" / "bench.json"
# What a top-level import of src.train brings in that its name does not say.
IMPORT_NOTES = {"src.data": " (torchvision, which imports torch._dynamo)"}


def with_overrides(overrides: list[str], *forced: str) -> list[str]:
    """`overrides` followed by `forced`, dropping a user override of a key that `forced` sets (Hydra takes a key
    only once)."""
    forced_keys = {item.split("=", 1)[0] for item in forced}
    return [item for item in overrides if item.split("=", 1)[0].lstrip("+~") not in forced_keys] + list(forced)


def compose_run_config(overrides: list[str]) -> DictConfig:
    """The config `python -m src.train OVERRIDES` runs, trimmed to one epoch without a progress bar."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=with_overrides(overrides, "trainer.epochs=1", "trainer.progress=false")
        )
    try:
        validate(cfg)
    except ConfigError as error:
        print(f"bench: invalid configuration:\n{error}", file=sys.stderr)
        sys.exit(2)
    return cfg


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read afterwards measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak resident memory (MiB) of this process during a `with` block.

    On Linux the high-water mark is reset first (after handing freed memory back to the system), so each block
    is measured on its own; elsewhere it is the process's peak so far (`resource.getrusage`). Worker processes of
    a DataLoader are not included.
    """

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
        except (OSError, AttributeError):  # not glibc, or not Linux: the peak so far is what can be had
            pass
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.mib = self.current_peak_mib()

    @staticmethod
    def current_peak_mib() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def reference_epoch(cfg: DictConfig, dataset: data.DeviceData, workers: int) -> float:
    """Seconds for one epoch of the textbook loop: PIL images through ToTensor in a DataLoader, `.item()` per step."""
    device = dataset.train_x.device
    root = str(data.locate(cfg.data.root, cfg.data.system_dir, cfg.data.download))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((dataset.mean,), (dataset.std,))])
    train_set = FashionMNIST(root, train=True, transform=transform)
    if cfg.data.train_size is not None:
        train_set = Subset(train_set, range(cfg.data.train_size))
    test_set = FashionMNIST(root, train=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=cfg.data.batch_size, shuffle=True, num_workers=workers)
    test_loader = DataLoader(test_set, batch_size=cfg.trainer.eval_batch_size, num_workers=workers)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    lr_driver = build_lr_driver(cfg, optimizer, len(train_loader))
    started = time.perf_counter()
    model.train()
    train_loss = train_correct = 0.0
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        lr_driver.after_step()
        train_loss += loss.item() * len(labels)
        train_correct += (logits.argmax(dim=1) == labels).sum().item()
    model.eval()
    test_loss = test_correct = 0.0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            test_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            test_correct += (logits.argmax(dim=1) == labels).sum().item()
    lr_driver.after_epoch()
    return time.perf_counter() - started


def runner_epoch(cfg: DictConfig) -> float:
    """Seconds for one epoch of `src.train`'s own run (its `wall_seconds`), its files written to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="lrbench-bench-") as folder:
        return run(cfg, Path(folder)).wall_seconds


def in_memory_batches(cfg: DictConfig, dataset: data.DeviceData) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, normalised batches, made ahead of time (the floor's input)."""
    order = torch.Generator(device=dataset.train_x.device).manual_seed(cfg.seed)
    return list(dataset.train_batches(order))


def floor_epoch(cfg: DictConfig, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Seconds for the forward/backward/optimizer steps alone, on `batches` already in memory."""
    device = batches[0][0].device
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    maybe_compile(model, cfg.trainer.compile)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    model.train()
    synchronize(device)
    started = time.perf_counter()
    for inputs, labels in batches:
        with autocast(device, cfg.trainer.precision):
            loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def train_command(overrides: list[str], output_root: Path, *forced: str) -> list[str]:
    """`python -m src.train` with `overrides`, then `forced`, quiet and writing under `output_root`."""
    forced = (*forced, "trainer.progress=false", f"output_root={output_root}")
    return [sys.executable, "-m", "src.train", *with_overrides(overrides, *forced)]


def first_step_seconds(overrides: list[str], batch_size: int) -> tuple[float, dict[str, float]]:
    """Wall time from launching `python -m src.train` to the end of its first optimizer step, and where it went.

    The run is short (8 batches, so that any schedule fits) and logs every step, so its first `train/lr` point is
    written right after the first step; the point's own wall-clock stamp in the event file marks the moment. The
    command runs under `python -X importtime`, whose report gives the time of each top-level import.
    """
    with tempfile.TemporaryDirectory(prefix="lrbench-startup-") as folder:
        command = train_command(
            overrides,
            Path(folder),
            f"data.train_size={8 * batch_size}",
            "trainer.epochs=1",
            "trainer.log_every_steps=1",
        )
        launched = time.time()
        completed = subprocess.run(
            [command[0], "-X", "importtime", *command[1:]], cwd=REPO_ROOT, check=True, capture_output=True, text=True
        )
        (metrics,) = Path(folder).rglob("metrics.json")
        events = EventAccumulator(str(metrics.parent), size_guidance={"scalars": 0})
        events.Reload()
        first_step = events.Scalars("train/lr")[0].wall_time - launched
    imports = top_level_imports(completed.stderr)
    large = {f"import {name}{IMPORT_NOTES.get(name, '')}": sec for name, sec in imports.items() if sec >= 0.05}
    breakdown = {
        **large,
        "the other imports": sum(imports.values()) - sum(large.values()),
        "the rest: interpreter, Hydra's compose and job set-up, reading the dataset, model, checkpoint, first step": (
            first_step - sum(imports.values())
        ),
    }
    return first_step, breakdown


def top_level_imports(importtime_report: str) -> dict[str, float]:
    """Seconds per top-level import (nested imports counted in the first module that needs them), largest first."""
    seconds = {}
    for line in importtime_report.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  "):  # one space: imported by the program itself, not by another module
            seconds[name.strip()] = int(cumulative) / 1e6
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def default_run_peak_rss_mib(overrides: list[str], epochs: int) -> float:
    """Peak resident memory (MiB) of `python -m src.train` with the default data, from the child's own rusage."""
    with tempfile.TemporaryDirectory(prefix="lrbench-memory-") as folder:
        child = subprocess.Popen(
            train_command(overrides, Path(folder), f"trainer.epochs={epochs}"),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise subprocess.CalledProcessError(child.returncode, child.args)
        return usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 1024


def measure_epochs(cfg: DictConfig, repeats: int) -> tuple[list[dict], int]:
    """Time every variant `repeats` times, taking turns: one row per variant (the median and every run), and the
    number of training images of an epoch."""
    device = select_device(cfg.trainer.device)
    configure_threads(cfg.trainer.threads)
    dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    batches = in_memory_batches(cfg, dataset)
    floor_epoch(cfg, batches[:10] + batches[-1:])  # warm-up: the kernels of both batch shapes are picked once
    variants = {
        f"reference, {workers} workers": (lambda w=workers: reference_epoch(cfg, dataset, w))
        for workers in REFERENCE_WORKERS
    }
    variants["runner (src.train)"] = lambda: runner_epoch(cfg)
    variants["floor"] = lambda: floor_epoch(cfg, batches)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, float] = dict.fromkeys(variants, 0.0)
    for repeat in range(repeats):
        for name, epoch in variants.items():
            if cfg.trainer.compile:
                torch._dynamo.reset()  # every epoch compiles afresh, as every run of src.train does
            with PeakMemory() as memory:
                seconds[name].append(epoch())
            peaks[name] = max(peaks[name], memory.mib)
            print(f"  repeat {repeat + 1}/{repeats}  {name:<22} {seconds[name][-1]:7.2f} s", file=sys.stderr)
    rows = []
    for name, runs in seconds.items():
        median = statistics.median(runs)
        rows.append(
            {
                "variant": name,
                "seconds_per_epoch": round(median, 3),
                "images_per_second": round(dataset.train_size / median),
                "peak_rss_mib": round(peaks[name]),
                "runs": [round(value, 3) for value in runs],
            }
        )
    return rows, dataset.train_size


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<22} {'s/epoch':>8} {'images/s':>9} {'peak MiB':>9}  runs (s)")
    for row in rows:
        runs = " ".join(f"{value:.2f}" for value in row["runs"])
        print(
            f"{row['variant']:<22} {row['seconds_per_epoch']:>8.2f} {row['images_per_second']:>9} "
            f"{row['peak_rss_mib']:>9}  {runs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every variant, e.g. trainer.threads=1")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed per variant (median reported); 5")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where the table goes; {DEFAULT_JSON}")
    parser.add_argument("--memory-epochs", type=int, default=2, help="epochs of the peak-memory run; 2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # The reference's 4 workers on a machine with fewer cores are the point of the comparison, not a mistake.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    load_before = os.getloadavg()

    cfg = compose_run_config(args.overrides)
    rows, train_images = measure_epochs(cfg, args.repeats)
    by_name = {row["variant"]: row["seconds_per_epoch"] for row in rows}
    best_reference = min(
        (row for row in rows if row["variant"].startswith("reference")), key=lambda row: row["seconds_per_epoch"]
    )
    speedup = best_reference["seconds_per_epoch"] / by_name["runner (src.train)"]
    overhead = by_name["runner (src.train)"] / by_name["floor"]

    first_step, breakdown = first_step_seconds(args.overrides, cfg.data.batch_size)
    peak_rss = default_run_peak_rss_mib(args.overrides, args.memory_epochs)
    load_after = os.getloadavg()

    print_table(rows)
    print(f"runner/floor = {overhead:.2f}   {best_reference['variant']}/runner = {speedup:.2f}")
    print(f"start-up, command to the end of the first step: {first_step:.2f} s")
    for phase, seconds in breakdown.items():
        print(f"  {seconds:6.2f} s  {phase}")
    print(f"peak resident memory of python -m src.train ({args.memory_epochs} epochs): {peak_rss:.0f} MiB")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(select_device(cfg.trainer.device)),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "overrides": args.overrides,
        "repeats": args.repeats,
        "train_images": train_images,
        "rows": rows,
        "runner_over_floor": round(overhead, 3),
        "best_reference_over_runner": round(speedup, 3),
        "startup_seconds": round(first_step, 3),
        "startup_breakdown_seconds": {phase: round(seconds, 3) for phase, seconds in breakdown.items()},
        "default_run": {"epochs": args.memory_epochs, "peak_rss_mib": round(peak_rss)},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"table written to {args.json}")
    print(f"speedup_vs_reference={speedup:.2f} overhead_vs_floor={overhead:.2f}")


if __name__ == "__main__":
    main()
