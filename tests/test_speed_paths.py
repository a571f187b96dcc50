"""The speed options work: bf16 autocast trains and logs, compile is in place, bad values stop the run, threads are
shared among parallel jobs, batches are the same whichever way they are gathered, freed CPU memory is reused without
page faults, and (where CUDA exists) the step loop never waits for the device. How fast any of it is, is measured by
scripts/bench.py, not here."""

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from src import REPO_ROOT
from src.analysis.events import read_events
from src.schedules import build_lr_driver
from src.train import run
from src.training import data
from src.training.device import autocast, available_cores, configure_threads, maybe_compile
from src.training.models import LeNet
from src.training.tracking import Tracker
from src.training.trainer import Trainer, TrainerSettings
from tests.conftest import run_train


def run_synthetic(compose_cfg, synthetic_root, run_dir, *overrides):
    cfg = compose_cfg(
        [
            f"data.root={synthetic_root}",
            "data.batch_size=64",
            "trainer.epochs=2",
            "trainer.progress=false",
            "trainer.log_every_steps=4",
            "trainer.threads=1",
            *overrides,
        ]
    )
    run_dir.mkdir()
    return run(cfg, run_dir)


def output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """Record the dtype of the logits of every forward pass of `model`."""
    seen: list[torch.dtype] = []
    model.classifier[-1].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def test_bf16_trains_evaluates_and_logs_like_fp32(compose_cfg, synthetic_root, tmp_path, monkeypatch):
    dtypes: dict[str, list[torch.dtype]] = {}
    original_lenet_init = LeNet.__init__

    def recording_init(self, *args, **kwargs):
        original_lenet_init(self, *args, **kwargs)
        dtypes[current] = output_dtypes(self)

    monkeypatch.setattr(LeNet, "__init__", recording_init)
    results = {}
    for current in ("fp32", "bf16"):
        results[current] = run_synthetic(
            compose_cfg, synthetic_root, tmp_path / current, f"trainer.precision={current}"
        )

    # 8 training steps and 1 test batch (256 images, batches of 500) per epoch, 2 epochs.
    assert dtypes["fp32"] == [torch.float32] * 18
    assert dtypes["bf16"] == [torch.bfloat16] * 18
    fp32, bf16 = results["fp32"], results["bf16"]
    assert bf16.steps == fp32.steps == 16 and not bf16.diverged
    for before, after in zip(fp32.history, bf16.history, strict=True):
        assert math.isfinite(after["test_loss"])
        assert after["test_loss"] != before["test_loss"]  # bf16 really changed the arithmetic ...
        assert after["test_loss"] == pytest.approx(before["test_loss"], rel=0.05)  # ... and only a little
    events = read_events(tmp_path / "bf16")
    assert events.steps("train/lr") == list(range(16))
    assert events.steps("train/loss") == [3, 7, 11, 15]
    assert events.steps("test/acc") == [8, 16]


def test_autocast_is_bf16_only_when_asked():
    layer = torch.nn.Linear(4, 2)
    inputs = torch.ones(3, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(inputs).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(inputs).dtype == torch.float32


def test_compile_is_in_place_so_parameters_and_checkpoint_keys_stay_the_same():
    model = LeNet()
    keys, parameters = list(model.state_dict()), list(model.parameters())
    maybe_compile(model, False)
    assert model._compiled_call_impl is None
    maybe_compile(model, True)  # compiles lazily, at the first call, so this test stays fast
    assert model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))


@pytest.mark.slow
def test_bad_speed_options_stop_the_command_before_training(tmp_path, synthetic_root):
    completed = run_train(
        "trainer.precision=fp16", "trainer.compile=2", f"data.root={synthetic_root}", f"output_root={tmp_path}"
    )
    assert completed.returncode == 2
    assert "trainer.precision='fp16': allowed is one of fp32, bf16" in completed.stderr
    assert "trainer.compile=2: allowed is true or false" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_threads_all_cores_for_one_run_shared_among_parallel_jobs():
    cores = available_cores()
    before = torch.get_num_threads()
    try:
        assert configure_threads(None) == cores == torch.get_num_threads()
        assert configure_threads(None, parallel_jobs=2) == max(1, cores // 2) == torch.get_num_threads()
        assert configure_threads(None, parallel_jobs=4 * cores) == 1
        assert configure_threads(3, parallel_jobs=2) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_batches_are_the_rows_of_the_permutation(synthetic_root):
    dataset = data.load(device=torch.device("cpu"), batch_size=100, root=str(synthetic_root), normalize=False)
    order = torch.randperm(dataset.train_size, generator=torch.Generator().manual_seed(7))
    batches = list(dataset.train_batches(torch.Generator().manual_seed(7)))
    assert [len(labels) for _, labels in batches] == dataset.batch_sizes() == [100] * 5 + [12]
    images = torch.cat([inputs for inputs, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(images, dataset.train_x[order].float().unsqueeze(1) / 255.0)
    assert torch.equal(labels, dataset.train_y[order])


A_BLOCK_IN_A_CPU_RUN = textwrap.dedent(
    """
    import json, torch
    from src.training.device import select_device

    def heap():
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[heap]"):
                    return tuple(int(x, 16) for x in line.split()[0].split("-"))
        return (0, 0)

    select_device("cpu")
    block = torch.ones(2**22)  # 16 MiB, the order of a training step's activations
    start, end = block.data_ptr(), block.data_ptr() + block.nbytes
    on_heap = heap()[0] <= start and end <= heap()[1]
    del block
    print(json.dumps({"on_heap": on_heap, "kept": heap()[0] <= start and end <= heap()[1]}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="the allocator setting is glibc's",
)
def test_a_cpu_run_serves_step_sized_blocks_from_the_heap_and_keeps_them_when_freed():
    # With glibc's defaults a fresh process maps such a block on its own and unmaps it when freed, so the next step
    # touches fresh pages again (page faults: about 400,000 in a first epoch on the full dataset).
    done = subprocess.run([sys.executable, "-c", A_BLOCK_IN_A_CPU_RUN], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"on_heap": True, "kept": True}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counting host syncs needs CUDA")
def test_the_step_loop_waits_for_the_device_once_per_logging_window(compose_cfg, synthetic_root, tmp_path):
    cfg = compose_cfg(
        [f"data.root={synthetic_root}", "data.batch_size=64", "trainer.device=cuda", "trainer.log_every_steps=4"]
    )
    dataset = data.load(device=torch.device("cuda"), batch_size=64, root=str(synthetic_root))
    model = LeNet().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tracker = Tracker(tmp_path)
    driver = build_lr_driver(cfg, optimizer, dataset.steps_per_epoch)
    settings = TrainerSettings(epochs=1, log_every_steps=4, progress=False)
    trainer = Trainer(model, optimizer, driver, dataset, tracker, settings)
    trainer.train_epoch(0)  # warm-up: cuDNN's benchmark and the allocator's first calls may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_epoch(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        tracker.close()
    syncs = [warning for warning in caught if "synchroniz" in str(warning.message)]
    assert len(syncs) == math.ceil(dataset.steps_per_epoch / 4)  # 8 steps: 2 windows, one read each
