"""`python scripts/bench.py [--repeats N] [--process-repeats N] [--json PATH] [overrides]`: what a run costs, per
epoch and as a whole process, against the textbook loop.

In one process, on the real Fashion-MNIST, with the same model, optimizer, batch size and number of steps, it times
one epoch of:
  - the reference, the usual textbook loop (scripts/textbook_loop.py): torchvision's dataset with ToTensor and
    Normalize, a shuffling DataLoader (with 4 worker processes and with none), per-step `.item()` metrics, then the
    test set the same way;
  - the runner: `src.train.run` with `trainer.epochs=1`, exactly what `python -m src.train` does (training,
    evaluation, TensorBoard logging, lr updates, checkpoint), writing into a temporary folder; its time is the
    run's own `wall_seconds` (the epochs, without loading the data or building the model);
  - the floor: the same forward/backward/optimizer steps on batches already in memory, and nothing else.
The variants take turns within every repeat, so a change in the machine's load hits all of them alike, and the
medians are compared.

Then whole processes, taking turns: `python -m src.train trainer.epochs=2` (through scripts/run_probe.py, which
stamps the end of each phase: imports, Hydra's compose, the config check, the data, the set-up, the first step,
each epoch) against `python scripts/textbook_loop.py --epochs 2`. Their ratio is the whole-process ratio, the stamps
give the start-up split and the first epoch against the second, and the child's rusage its peak memory. Last, a
4-job sweep (`-m seed=0,1,2,3`, 1 epoch each) in one process gives the per-job overhead: a job's wall time (from
the end of the previous job) minus its epochs.

Overrides apply to every variant (e.g. `trainer.precision=bf16`, `trainer.threads=1`, `data.train_size=4096`).
The tables go to stdout and, as JSON, to `--json`; the last line is `speedup_vs_reference=<best reference /
runner> overhead_vs_floor=<runner / floor> process_ratio=<runner process / textbook process>
startup_beyond_torch=<s> job_overhead=<s>`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
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
from omegaconf import DictConfig, OmegaConf
from textbook_loop import loaders, one_epoch

from src import REPO_ROOT
from src.config.validation import ConfigError, validate
from src.schedules import build_lr_driver
from src.train import run
from src.training import data
from src.training.datasets import fashion_mnist
from src.training.device import autocast, configure_threads, maybe_compile, select_device
from src.training.models import build_model
from src.training.optimizers import build_optimizer

REFERENCE_WORKERS = (4, 0)
DEFAULT_JSON = REPO_ROOT / "outputs" / "bench" / "bench.json"
SCRIPTS = Path(__file__).resolve().parent
PROCESS_EPOCHS = 2
SWEEP_SEEDS = (0, 1, 2, 3)
# The start-up phases run_probe.py stamps, in order, and what each covers.
STARTUP_PHASES = {
    "started": "the interpreter's own start",
    "import torch": "import torch",
    "imports": "src.train's other imports (Hydra, TensorBoard, the project)",
    "compose": "Hydra: compose the config, set up the job",
    "check": "the config check",
    "data": "the dataset (read and checked, or from memory)",
    "setup": "model, optimizer, lr driver, TensorBoard writer, first checkpoint",
    "first step": "the first optimizer step",
}


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
    root = str(fashion_mnist.locate(cfg.data.root, cfg.data.system_dir, cfg.data.download))
    train_loader, test_loader = loaders(
        root,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
        workers=workers,
        train_size=cfg.data.train_size,
        mean=dataset.mean,
        std=dataset.std,
    )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    lr_driver = build_lr_driver(cfg, optimizer, len(train_loader))
    started = time.perf_counter()
    one_epoch(model, optimizer, train_loader, test_loader, device, lr_driver.after_step)
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


def floor_epoch(cfg: DictConfig, dataset: data.DeviceData, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Seconds for the forward/backward/optimizer steps alone, on `batches` (of `dataset`) already in memory."""
    device = batches[0][0].device
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset).to(device)
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


def timed_process(command: list[str]) -> tuple[float, float, float]:
    """Run `command` from the repository; its launch time (time.time()), wall seconds and peak resident MiB.

    The peak is the child's own VmHWM, polled while it runs: its rusage `ru_maxrss` would start from this (large)
    process's high-water mark, which a child inherits through fork and exec.
    """
    with tempfile.TemporaryFile(mode="w+") as errors:
        launched = time.time()
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        peak_kib = 0
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                peak_kib = max(peak_kib, high_water_kib(child.pid))
                time.sleep(0.01)
        except BaseException:  # the bench stopped (Ctrl-C): leave no child running
            child.kill()
            child.wait()
            raise
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            print(errors.read()[-3000:], file=sys.stderr)
            raise subprocess.CalledProcessError(child.returncode, command)
    if not peak_kib:  # no /proc: the rusage figure, an upper bound
        peak_kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return launched, seconds, peak_kib / 1024


def high_water_kib(pid: int) -> int:
    """A running process's peak resident memory so far (VmHWM, KiB), 0 where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def runner_process(overrides: list[str]) -> dict:
    """`python -m src.train trainer.epochs=2` as a whole process, through run_probe.py: its wall time, peak memory,
    the seconds of each start-up phase, of each epoch and of what comes after the last one."""
    with tempfile.TemporaryDirectory(prefix="lrbench-process-") as folder:
        command = train_command(overrides, Path(folder), f"trainer.epochs={PROCESS_EPOCHS}")
        stamps_file = Path(folder) / "stamps.json"
        launched, seconds, peak = timed_process(
            [command[0], str(SCRIPTS / "run_probe.py"), str(stamps_file), *command[3:]]
        )
        stamps = json.loads(stamps_file.read_text())
    return {"seconds": seconds, "peak_rss_mib": peak, **phase_seconds(stamps, launched, seconds)}


def phase_seconds(stamps: dict, launched: float, seconds: float) -> dict:
    """run_probe.py's stamps as durations: each start-up phase (torch._dynamo's import on its own, taken out of the
    phase it happened in), the start-up in all, each epoch, and the end (after the last epoch to the exit)."""
    previous, phases = launched, {}
    for name in STARTUP_PHASES:
        phases[name] = stamps[name] - previous
        previous = stamps[name]
    dynamo = stamps.get("dynamo_seconds", 0.0)
    if stamps.get("dynamo_during") in phases:
        phases[stamps["dynamo_during"]] -= dynamo
    edges = [stamps["setup"], *stamps["epochs"]]
    return {
        "startup": {**phases, "import torch._dynamo": dynamo},
        "startup_seconds": stamps["first step"] - launched,
        "dynamo_imported_during": stamps.get("dynamo_during"),
        "epoch_seconds": [after - before for before, after in itertools.pairwise(edges)],
        "after_epochs_seconds": launched + seconds - edges[-1],
    }


def textbook_process(cfg: DictConfig, workers: int) -> dict:
    """scripts/textbook_loop.py over the same epochs as a whole process: its wall time and peak memory."""
    command = [
        sys.executable,
        str(SCRIPTS / "textbook_loop.py"),
        f"--root={fashion_mnist.locate(cfg.data.root, cfg.data.system_dir, cfg.data.download)}",
        f"--epochs={PROCESS_EPOCHS}",
        f"--workers={workers}",
        f"--device={select_device(cfg.trainer.device)}",
        f"--batch-size={cfg.data.batch_size}",
        f"--eval-batch-size={cfg.trainer.eval_batch_size}",
    ]
    if cfg.trainer.threads is not None:
        command.append(f"--threads={cfg.trainer.threads}")
    if cfg.data.train_size is not None:
        command.append(f"--train-size={cfg.data.train_size}")
    _, seconds, peak = timed_process(command)
    return {"seconds": seconds, "peak_rss_mib": peak}


def measure_processes(cfg: DictConfig, overrides: list[str], repeats: int, workers: int) -> dict:
    """The runner's and the textbook loop's whole processes, taking turns `repeats` times; medians."""
    runs: dict[str, list[dict]] = {"runner": [], "textbook": []}
    for repeat in range(repeats):
        runs["runner"].append(runner_process(overrides))
        runs["textbook"].append(textbook_process(cfg, workers))
        print(
            f"  process {repeat + 1}/{repeats}  src.train {runs['runner'][-1]['seconds']:6.2f} s  "
            f"textbook {runs['textbook'][-1]['seconds']:6.2f} s",
            file=sys.stderr,
        )
    runner = runs["runner"]
    median = statistics.median
    return {
        "epochs": PROCESS_EPOCHS,
        "textbook_workers": workers,
        "runner_seconds": median(run["seconds"] for run in runner),
        "textbook_seconds": median(run["seconds"] for run in runs["textbook"]),
        "ratio": median(run["seconds"] for run in runner) / median(run["seconds"] for run in runs["textbook"]),
        "runner_peak_rss_mib": max(run["peak_rss_mib"] for run in runner),
        "textbook_peak_rss_mib": max(run["peak_rss_mib"] for run in runs["textbook"]),
        "startup_seconds": median(run["startup_seconds"] for run in runner),
        "startup": {phase: median(run["startup"][phase] for run in runner) for phase in runner[0]["startup"]},
        "dynamo_imported_during": runner[0]["dynamo_imported_during"],
        "epoch_seconds": [median(run["epoch_seconds"][i] for run in runner) for i in range(PROCESS_EPOCHS)],
        "after_epochs_seconds": median(run["after_epochs_seconds"] for run in runner),
        "runs": {name: [round(run["seconds"], 3) for run in values] for name, values in runs.items()},
    }


def measure_sweep(overrides: list[str]) -> dict:
    """A 4-job sequential sweep (`-m seed=0,1,2,3`, 1 epoch each) in one process: each job's wall time minus its
    epochs. A job's wall time runs from the end of the previous job (Hydra's set-up of the next job included) to its
    metrics.json; the first job's from its folder's creation, so it includes reading the dataset, not the start-up."""
    with tempfile.TemporaryDirectory(prefix="lrbench-sweep-") as folder:
        command = train_command(overrides, Path(folder), "trainer.epochs=1", f"seed={','.join(map(str, SWEEP_SEEDS))}")
        command.insert(3, "-m")  # after `python -m src.train`
        launched, seconds, _ = timed_process(command)
        jobs = sorted(
            Path(folder).glob("sweeps/*/*/*/metrics.json"), key=lambda path: int(path.parent.name.split("_")[0])
        )
        ends = [path.stat().st_mtime for path in jobs]
        epochs = [json.loads(path.read_text())["wall_seconds"] for path in jobs]
        first_start = (jobs[0].parent / ".hydra" / "config.yaml").stat().st_mtime
    walls = [ends[0] - first_start] + [after - before for before, after in itertools.pairwise(ends)]
    overheads = [wall - epoch for wall, epoch in zip(walls, epochs, strict=True)]
    return {
        "jobs": len(jobs),
        "seconds": seconds,
        "job_wall_seconds": walls,
        "job_epoch_seconds": epochs,
        "job_overhead_seconds": overheads,
        "per_job_overhead": statistics.median(overheads[1:]),
        "first_job_overhead": overheads[0],
        "before_first_job": first_start - launched,
        "after_last_job": launched + seconds - ends[-1],
    }


def measure_epochs(cfg: DictConfig, repeats: int) -> tuple[list[dict], int]:
    """Time every variant `repeats` times, taking turns: one row per variant (the median and every run), and the
    number of training images of an epoch."""
    device = select_device(cfg.trainer.device)
    configure_threads(cfg.trainer.threads)
    dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    batches = in_memory_batches(cfg, dataset)
    floor_epoch(cfg, dataset, batches[:10] + batches[-1:])  # warm-up: the kernels of both batch shapes are picked once
    variants = {
        f"reference, {workers} workers": (lambda w=workers: reference_epoch(cfg, dataset, w))
        for workers in REFERENCE_WORKERS
    }
    variants["runner (src.train)"] = lambda: runner_epoch(cfg)
    variants["floor"] = lambda: floor_epoch(cfg, dataset, batches)
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


def print_processes(processes: dict) -> None:
    runner, textbook = processes["runner_seconds"], processes["textbook_seconds"]
    print(
        f"\nwhole process, {processes['epochs']} epochs: src.train {runner:.2f} s, textbook loop "
        f"({processes['textbook_workers']} workers) {textbook:.2f} s: ratio {processes['ratio']:.2f}"
    )
    startup = processes["startup"]
    print(
        f"start-up, command to the end of the first step: {processes['startup_seconds']:.2f} s, "
        f"{processes['startup_seconds'] - startup['import torch']:.2f} s beyond import torch"
    )
    for phase, description in STARTUP_PHASES.items():
        print(f"  {startup[phase]:6.2f} s  {description}")
    print(
        f"  {startup['import torch._dynamo']:6.2f} s  import torch._dynamo (torch.optim imports it; "
        f"here during: {processes['dynamo_imported_during']})"
    )
    epochs = "  ".join(f"{seconds:.2f} s" for seconds in processes["epoch_seconds"])
    print(
        f"epochs in that process: {epochs}; after the last epoch to the exit: {processes['after_epochs_seconds']:.2f} s"
    )
    print(
        f"peak resident memory: src.train {processes['runner_peak_rss_mib']:.0f} MiB, "
        f"textbook loop {processes['textbook_peak_rss_mib']:.0f} MiB"
    )


def print_sweep(sweep: dict) -> None:
    print(f"\n{sweep['jobs']}-job sweep in one process: {sweep['seconds']:.2f} s")
    print("  job  wall (s)  epochs (s)  overhead (s)")
    for number, (wall, epochs, overhead) in enumerate(
        zip(sweep["job_wall_seconds"], sweep["job_epoch_seconds"], sweep["job_overhead_seconds"], strict=True)
    ):
        print(f"  {number:>3}  {wall:8.2f}  {epochs:10.2f}  {overhead:12.2f}")
    print(
        f"  per-job overhead (median of jobs 1-{sweep['jobs'] - 1}): {sweep['per_job_overhead']:.2f} s; "
        f"before the first job {sweep['before_first_job']:.2f} s, after the last {sweep['after_last_job']:.2f} s "
        "(the sweep's report)"
    )


def rounded(value):
    """`value` with every float rounded to 3 decimals, for the JSON."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every variant, e.g. trainer.threads=1")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed per variant (median reported); 5")
    parser.add_argument("--process-repeats", type=int, default=5, help="whole processes timed per side; 5")
    parser.add_argument("--textbook-workers", type=int, default=0, help="the textbook process's DataLoader workers; 0")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where the table goes; {DEFAULT_JSON}")
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

    processes = measure_processes(cfg, args.overrides, args.process_repeats, args.textbook_workers)
    sweep = measure_sweep(args.overrides)
    load_after = os.getloadavg()

    print_table(rows)
    print(f"runner/floor = {overhead:.2f}   {best_reference['variant']}/runner = {speedup:.2f}")
    print_processes(processes)
    print_sweep(sweep)
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    startup_beyond_torch = processes["startup_seconds"] - processes["startup"]["import torch"]
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
        "whole_process": rounded(processes),
        "startup_beyond_torch_seconds": round(startup_beyond_torch, 3),
        "sweep": rounded(sweep),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"table written to {args.json}")
    print(
        f"speedup_vs_reference={speedup:.2f} overhead_vs_floor={overhead:.2f} process_ratio={processes['ratio']:.2f} "
        f"startup_beyond_torch={startup_beyond_torch:.2f} job_overhead={sweep['per_job_overhead']:.2f}"
    )


if __name__ == "__main__":
    main()
