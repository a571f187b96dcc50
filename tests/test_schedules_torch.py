"""The catalogue against torch's own schedulers over a whole run, state_dict round-trips, momentum cycling and
the plateau schedule's observations, all through the `LRDriver` the trainer uses. Nothing is trained."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.optim import lr_scheduler

from src.schedules import build_lr_driver, lr_curve
from src.training.optimizers import build_optimizer

STEPS_PER_EPOCH = 47
EPOCHS = 5
TOTAL = STEPS_PER_EPOCH * EPOCHS


def torch_curves(make, steps: int = TOTAL, lr: float = 0.1, momentum: float = 0.9):
    """lr and momentum per step of a torch scheduler `make(optimizer)` stepped after every optimizer step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=momentum)
    scheduler = make(optimizer)
    lrs, momenta = [], []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return lrs, momenta


def driver_curves(cfg, steps: int = TOTAL):
    """The same from our driver, stepped as the trainer steps it."""
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, STEPS_PER_EPOCH)
    lrs, momenta = [], []
    for step in range(steps):
        lrs.append(driver.lr)
        momenta.append(driver.momentum)
        optimizer.step()
        driver.after_step()
        if (step + 1) % STEPS_PER_EPOCH == 0:
            driver.after_epoch(None)
    return lrs, momenta


def assert_same(ours: list[float], theirs: list[float]) -> None:
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0), f"step {step}: {a} != {b}"


TORCH_EQUIVALENTS = {
    "StepLR": (
        ["scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"],
        lambda opt: lr_scheduler.StepLR(opt, step_size=2 * STEPS_PER_EPOCH, gamma=0.5),
    ),
    "MultiStepLR": (
        ["scheduler=multistep", "scheduler.milestones=[1,3]", "scheduler.gamma=0.3"],
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH], gamma=0.3),
    ),
    "ExponentialLR": (
        ["scheduler=exponential", "scheduler.gamma=0.99", "scheduler.period_epochs=null"],
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.99),
    ),
    "CosineAnnealingLR": (
        ["scheduler=cosine", "scheduler.final_lr=0.002"],
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL, eta_min=0.002),
    ),
    "PolynomialLR": (
        ["scheduler=polynomial", "scheduler.power=2.0"],
        lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=TOTAL, power=2.0),
    ),
    "OneCycleLR": (
        ["scheduler=one_cycle", "scheduler.max_lr=0.4"],
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=TOTAL),
    ),
    "OneCycleLR three-phase linear": (
        [
            "scheduler=one_cycle",
            "scheduler.three_phase=true",
            "scheduler.anneal_strategy=linear",
            "scheduler.pct_start=0.25",
            "scheduler.div_factor=10",
            "scheduler.final_div_factor=100",
        ],
        lambda opt: lr_scheduler.OneCycleLR(
            opt,
            max_lr=0.1,
            total_steps=TOTAL,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10,
            final_div_factor=100,
        ),
    ),
    "CyclicLR triangular2 with momentum": (
        [
            "scheduler=cyclic",
            "scheduler.min_lr=0.01",
            "scheduler.up_steps=20",
            "scheduler.down_steps=30",
            "scheduler.mode=triangular2",
            "scheduler.cycle_momentum=true",
        ],
        lambda opt: lr_scheduler.CyclicLR(
            opt, base_lr=0.01, max_lr=0.1, step_size_up=20, step_size_down=30, mode="triangular2"
        ),
    ),
    "CyclicLR exp_range": (
        [
            "scheduler=cyclic",
            "scheduler.min_lr=0.02",
            "scheduler.up_steps=15",
            "scheduler.mode=exp_range",
            "scheduler.gamma=0.995",
        ],
        lambda opt: lr_scheduler.CyclicLR(
            opt, base_lr=0.02, max_lr=0.1, step_size_up=15, mode="exp_range", gamma=0.995, cycle_momentum=False
        ),
    ),
    "CosineAnnealingWarmRestarts": (
        [
            "scheduler=cosine_restarts",
            "scheduler.cycle_epochs=null",
            "scheduler.cycle_steps=30",
            "scheduler.cycle_mult=2",
            "scheduler.final_lr=0.001",
        ],
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=30, T_mult=2, eta_min=0.001),
    ),
}


@pytest.mark.parametrize("name", list(TORCH_EQUIVALENTS))
def test_curve_agrees_with_torch_over_a_whole_run(compose_cfg, name):
    overrides, make = TORCH_EQUIVALENTS[name]
    cfg = compose_cfg([*overrides, f"trainer.epochs={EPOCHS}", "optimizer.lr=0.1"])
    ours, our_momenta = driver_curves(cfg)
    theirs, their_momenta = torch_curves(make)
    assert_same(ours, theirs)
    assert_same(our_momenta, their_momenta)  # cycled where torch cycles it, untouched (0.9) where it does not
    assert ours == lr_curve(cfg, STEPS_PER_EPOCH)  # the preview reads the same numbers


def test_one_cycle_cycles_adams_first_beta_like_torch(compose_cfg):
    cfg = compose_cfg(["scheduler=one_cycle", "optimizer=adam", "optimizer.lr=0.003", f"trainer.epochs={EPOCHS}"])
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, STEPS_PER_EPOCH)
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.003)
    scheduler = lr_scheduler.OneCycleLR(reference, max_lr=0.003, total_steps=TOTAL)
    for step in range(TOTAL):
        assert math.isclose(driver.lr, reference.param_groups[0]["lr"], rel_tol=1e-9), step
        assert optimizer.param_groups[0]["betas"] == pytest.approx(reference.param_groups[0]["betas"], rel=1e-9)
        optimizer.step()
        driver.after_step()
        reference.step()
        scheduler.step()


def run_with_metrics(driver, optimizer, losses: list[float], steps_per_epoch: int) -> list[float]:
    """Drive `driver` through len(losses) epochs, observing test_loss after each; the lr of every step."""
    lrs = []
    for loss in losses:
        for _ in range(steps_per_epoch):
            lrs.append(driver.lr)
            optimizer.step()
            driver.after_step()
        driver.after_epoch({"test_loss": loss, "test_acc": 0.5, "train_loss": loss, "train_acc": 0.5, "lr": 0})
    return lrs


LOSSES = [1.0, 0.8, 0.81, 0.82, 0.79, 0.795, 0.80, 0.81, 0.70, 0.71, 0.72, 0.73]


def test_reduce_on_plateau_matches_torch_epoch_by_epoch(compose_cfg):
    cfg = compose_cfg(
        [
            "scheduler=reduce_on_plateau",
            "scheduler.interval=epoch",
            "scheduler.patience=1",
            "scheduler.factor=0.5",
            "scheduler.cooldown=1",
            "scheduler.min_lr=0.02",
            f"trainer.epochs={len(LOSSES)}",
        ]
    )
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    ours = run_with_metrics(build_lr_driver(cfg, optimizer, 1), optimizer, LOSSES, 1)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plateau = lr_scheduler.ReduceLROnPlateau(reference, factor=0.5, patience=1, cooldown=1, min_lr=0.02)
    theirs = []
    for loss in LOSSES:
        theirs.append(reference.param_groups[0]["lr"])
        plateau.step(loss)
    assert_same(ours, theirs)
    assert min(ours) == pytest.approx(0.02) and ours[0] == 0.1  # it did cut, down to min_lr


def test_reduce_on_plateau_in_step_mode_cuts_from_the_next_epochs_first_step(compose_cfg):
    cfg = compose_cfg(["scheduler=reduce_on_plateau", "scheduler.patience=0", "scheduler.factor=0.5"])
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    lrs = run_with_metrics(build_lr_driver(cfg, optimizer, 3), optimizer, [1.0, 1.5, 0.5, 0.6], 3)
    assert lrs == pytest.approx([0.1] * 6 + [0.05] * 6)  # epoch 2 did not improve: cut before epoch 3 begins
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # epoch 4 did not either


def test_reduce_on_plateau_watches_only_after_the_warmup_and_can_watch_accuracy(compose_cfg):
    cfg = compose_cfg(
        [
            "scheduler=reduce_on_plateau",
            "scheduler.interval=epoch",
            "scheduler.warmup_epochs=2",
            "scheduler.monitor=test_acc",
            "scheduler.mode=max",
            "scheduler.patience=0",
            "trainer.epochs=5",
        ]
    )
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, 1)
    lrs = []
    for accuracy in [0.9, 0.1, 0.5, 0.4, 0.6]:  # the drop during the warmup does not count
        lrs.append(driver.lr)
        optimizer.step()
        driver.after_epoch({"test_loss": 1.0, "test_acc": accuracy, "train_loss": 1.0, "train_acc": accuracy})
    assert lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.01])


def round_trip(state: dict) -> dict:
    """Through bytes, as a checkpoint file carries it (read with weights_only, as src.runs.checkpoints reads it)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler=cosine_warmup"],
        ["scheduler=one_cycle"],
        ["scheduler=warmup_stable_decay", "scheduler.interval=epoch"],
        ["scheduler=reduce_on_plateau", "scheduler.patience=0", "scheduler.warmup_epochs=1"],
    ],
    ids=["cosine_warmup", "one_cycle", "wsd_epoch", "reduce_on_plateau"],
)
def test_state_dict_round_trip_mid_run_gives_the_same_remaining_curve(compose_cfg, overrides):
    cfg = compose_cfg([*overrides, "trainer.epochs=6"])
    losses = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6]
    spe = 5

    def fresh():
        optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
        return optimizer, build_lr_driver(cfg, optimizer, spe)

    optimizer, driver = fresh()
    whole = run_with_metrics(driver, optimizer, losses, spe)
    whole_momentum = optimizer.param_groups[0]["momentum"]

    optimizer, driver = fresh()
    first_half = run_with_metrics(driver, optimizer, losses[:3], spe)
    state = round_trip(driver.state_dict())
    run_with_metrics(driver, optimizer, [5.0, 5.0], spe)  # the saved state must not follow the original on

    optimizer, resumed = fresh()
    resumed.load_state_dict(state)
    second_half = run_with_metrics(resumed, optimizer, losses[3:], spe)
    assert first_half + second_half == whole
    assert optimizer.param_groups[0]["momentum"] == whole_momentum
    if "scheduler=reduce_on_plateau" in overrides:
        assert min(whole) < 0.1  # the plateau did cut, so its state was part of the round trip


def test_previewing_never_advances_the_driver_a_run_trains_with(compose_cfg):
    cfg = compose_cfg(["scheduler=cosine_warmup", "trainer.epochs=2"])
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, 10)
    expected = lr_curve(cfg, 10)
    seen = []
    for _ in range(20):
        seen.append(driver.lr)
        lr_curve(cfg, 10)  # plotting in the middle of training
        optimizer.step()
        driver.after_step()
    assert seen == expected
    assert len(set(seen)) == 20  # a moving curve, so a consumed scheduler would show


def test_one_cycle_over_a_few_epochs_follows_torch_even_when_the_rise_is_shorter_than_one_update(compose_cfg):
    cfg = compose_cfg(["scheduler=one_cycle", "scheduler.interval=epoch", "trainer.epochs=3"])  # 0.3 * 3 - 1 < 0
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    ours = run_with_metrics(build_lr_driver(cfg, optimizer, 1), optimizer, [1.0, 1.0, 1.0], 1)
    theirs, _ = torch_curves(lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3), steps=3)
    assert_same(ours, theirs)
