"""Every schedule of conf/scheduler/ against its closed-form formula, written out here independently of the code.

Each case is checked at named updates (start, the last warmup update, the first after it, the middle, the end,
and past the end) in both step and epoch mode: with `interval=step` update u is optimizer step u, with
`interval=epoch` it is epoch u and every step of that epoch has its lr. Nothing is trained.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from src.schedules import Timeline, build_schedule, lr_curve

STEPS_PER_EPOCH = 7  # odd, so epoch <-> step conversions that round wrongly show up
EPOCHS = 6
BASE_LR = 0.1


@dataclass(frozen=True)
class Mode:
    """The run as a case sees it: T updates, `per_epoch` updates per epoch."""

    interval: str

    @property
    def per_epoch(self) -> int:
        return STEPS_PER_EPOCH if self.interval == "step" else 1

    @property
    def total(self) -> int:
        return EPOCHS * self.per_epoch

    def steps(self, count: int) -> int:
        """A count of optimizer steps in updates: itself, or whole epochs rounded up."""
        return count if self.interval == "step" else math.ceil(count / STEPS_PER_EPOCH)

    def ratio(self, ratio: float) -> int:
        return math.ceil(self.total * ratio)


def ramp(u: int, warmup: int) -> float:
    """The default linear warmup: (u + 1) / (W + 1) of the peak at update u < W."""
    return (u + 1) / (warmup + 1)


def cos_between(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    lr: Callable[[int, Mode], float]  # the expected lr of update u
    warmup: Callable[[Mode], int] = lambda mode: 0
    id: str = ""


def _constant_warmup(u: int, m: Mode) -> float:
    w = m.ratio(0.1)
    return BASE_LR * ramp(u, w) if u < w else BASE_LR


def _linear_warmup(u: int, m: Mode) -> float:
    w = m.ratio(0.1)
    if u < w:
        return BASE_LR * ramp(u, w)
    return 0.01 + (BASE_LR - 0.01) * max(0.0, 1 - (u - w) / (m.total - w))


def _cosine_short(u: int, m: Mode) -> float:
    length = 4 * m.per_epoch
    return cos_between(BASE_LR, 0.01, u / length) if u < length else 0.01


def _cosine_warmup(u: int, m: Mode) -> float:
    w = m.ratio(0.1)
    if u < w:
        return BASE_LR * ramp(u, w)
    return cos_between(BASE_LR, 0.0, min(1.0, (u - w) / (m.total - w)))


def _cosine_exponential_warmup(u: int, m: Mode) -> float:
    w = m.per_epoch
    if u < w:
        return BASE_LR * 0.01 ** (1 - u / w)
    return cos_between(BASE_LR, 0.0, min(1.0, (u - w) / (m.total - w)))


def _polynomial(u: int, m: Mode) -> float:
    return 0.005 + (BASE_LR - 0.005) * max(0.0, 1 - u / m.total) ** 3


def _exponential(u: int, m: Mode) -> float:
    return max(0.05, BASE_LR * 0.8 ** (u / m.per_epoch))


def _exponential_staircase(u: int, m: Mode) -> float:
    return BASE_LR * 0.8 ** (u // m.per_epoch)


def _factor(u: int, m: Mode) -> float:
    return max(0.02, BASE_LR * 0.7**u)


def _step(u: int, m: Mode) -> float:
    # drops at the run's epochs 2 and 4; past the run the lr stays where the run ended (clamped)
    return BASE_LR * 0.5 ** (min(u, m.total - 1) // (2 * m.per_epoch))


def _multistep(u: int, m: Mode) -> float:
    return BASE_LR * 0.1 ** sum(u >= e * m.per_epoch for e in (2, 5))


def _multistep_after_warmup(u: int, m: Mode) -> float:
    w = m.per_epoch
    return BASE_LR * ramp(u, w) if u < w else _multistep(u, m)


def _piecewise(u: int, m: Mode) -> float:
    return BASE_LR * (1.0 if u < m.per_epoch else 0.5 if u < 3 * m.per_epoch else 0.2)


def _inverse_sqrt(u: int, m: Mode) -> float:
    return BASE_LR / math.sqrt(u + 1)


def _inverse_sqrt_warmup(u: int, m: Mode) -> float:
    w = m.steps(14)
    return BASE_LR * ramp(u, w) if u < w else BASE_LR * math.sqrt(w / u)


def _noam(u: int, m: Mode) -> float:
    w = m.ratio(0.1)
    s = u + 1
    return 2.0 * 64**-0.5 * min(s**-0.5, s * w**-1.5)


def _warmup_inverse(u: int, m: Mode) -> float:
    w = m.ratio(0.1)
    return BASE_LR * ramp(u, w) if u < w else BASE_LR * w / u


def _wsd(shape: str) -> Callable[[int, Mode], float]:
    def lr(u: int, m: Mode) -> float:
        w, d = m.ratio(0.1), m.ratio(0.5)
        if u < w:
            return BASE_LR * ramp(u, w)
        if u < m.total - d:
            return BASE_LR
        p = min(1.0, (u - (m.total - d)) / d)
        falls = {"linear": 1 - p, "cosine": 0.5 * (1 + math.cos(math.pi * p)), "1-sqrt": 1 - math.sqrt(p)}
        return 0.01 + (BASE_LR - 0.01) * falls[shape]

    return lr


def _restarts(u: int, m: Mode) -> float:
    # cycles of 2, 4, 8 epochs with peaks 1, 0.5, 0.25 of the base lr, down to 0.001
    start, length, peak = 0, 2 * m.per_epoch, BASE_LR
    while u >= start + length:
        start, length, peak = start + length, length * 2, peak * 0.5
    return cos_between(peak, 0.001, (u - start) / length)


def _restarts_with_cycle_warmup(u: int, m: Mode) -> float:
    length = 2 * m.per_epoch
    position = u % length
    w = math.ceil(length * 0.25)
    if position < w:
        return BASE_LR * ramp(position, w)
    return cos_between(BASE_LR, 0.0, (position - w) / (length - w))


def _one_cycle(u: int, m: Mode) -> float:
    # up from 0.2/25 to 0.2 over pct_start*T - 1 updates (cos), then down to 0.2/25/1e4 at T - 1 (cos)
    top, low, end = 0.2, 0.2 / 25, 0.2 / 25 / 1e4
    up = 0.5 * m.total - 1
    u = min(u, m.total - 1)
    if u <= up:
        return cos_between(low, top, u / up)
    return cos_between(top, end, (u - up) / (m.total - 1 - up))


def _cyclic(u: int, m: Mode) -> float:
    up, down = m.per_epoch, 2 * m.per_epoch
    position = u % (up + down)
    height = position / up if position <= up else (up + down - position) / down
    return 0.01 + (BASE_LR - 0.01) * height


def _cyclic_triangular2(u: int, m: Mode) -> float:
    up = m.per_epoch
    cycle, position = divmod(u, 2 * up)
    height = position / up if position <= up else (2 * up - position) / up
    return 0.02 + (BASE_LR - 0.02) * height / 2**cycle


WARMUP_10 = lambda mode: mode.ratio(0.1)  # noqa: E731
CASES = [
    Case("constant", (), lambda u, m: BASE_LR),
    Case("constant_warmup", (), _constant_warmup, WARMUP_10),
    Case("linear_warmup", ("scheduler.final_lr=0.01",), _linear_warmup, WARMUP_10),
    Case("cosine", ("scheduler.final_lr=0.01", "scheduler.total_epochs=4"), _cosine_short, id="cosine_ends_early"),
    Case("cosine_warmup", (), _cosine_warmup, WARMUP_10),
    Case(
        "cosine_warmup",
        (
            "scheduler.warmup_ratio=0",
            "scheduler.warmup_epochs=1",
            "scheduler.warmup_shape=exponential",
            "scheduler.warmup_start_factor=0.01",
        ),
        _cosine_exponential_warmup,
        lambda mode: mode.per_epoch,
        id="cosine_exponential_warmup",
    ),
    Case("polynomial", ("scheduler.power=3", "scheduler.final_lr=0.005"), _polynomial),
    Case("exponential", ("scheduler.gamma=0.8", "scheduler.min_lr=0.05"), _exponential),
    Case("exponential", ("scheduler.gamma=0.8", "scheduler.staircase=true"), _exponential_staircase, id="staircase"),
    Case("factor", ("scheduler.factor=0.7", "scheduler.stop_factor_lr=0.02"), _factor),
    Case("step", ("scheduler.step_size=2", "scheduler.gamma=0.5"), _step),
    Case("multistep", ("scheduler.milestones=[2,5]", "scheduler.gamma=0.1"), _multistep),
    Case(
        "multistep",
        ("scheduler.milestones=[2,5]", "scheduler.warmup_epochs=1"),
        _multistep_after_warmup,
        lambda mode: mode.per_epoch,
        id="multistep_milestones_count_from_the_run_start",
    ),
    Case("piecewise", ("scheduler.boundaries=[1,3]", "scheduler.values=[1.0,0.5,0.2]"), _piecewise),
    Case("inverse_sqrt", (), _inverse_sqrt),
    Case("inverse_sqrt", ("scheduler.warmup_steps=14",), _inverse_sqrt_warmup, lambda m: m.steps(14), id="isqrt_w"),
    Case("noam", ("scheduler.d_model=64", "scheduler.factor=2.0"), _noam, WARMUP_10),
    Case("warmup_inverse", (), _warmup_inverse, WARMUP_10),
    *[
        Case(
            "warmup_stable_decay",
            ("scheduler.decay_ratio=0.5", f"scheduler.decay_shape={shape}", "scheduler.final_lr=0.01"),
            _wsd(shape),
            WARMUP_10,
            id=f"wsd_{shape}",
        )
        for shape in ("linear", "cosine", "1-sqrt")
    ],
    Case(
        "cosine_restarts",
        ("scheduler.cycle_epochs=2", "scheduler.cycle_mult=2", "scheduler.cycle_decay=0.5", "scheduler.final_lr=0.001"),
        _restarts,
    ),
    Case(
        "cosine_restarts",
        ("scheduler.cycle_epochs=2", "scheduler.cycle_warmup_ratio=0.25"),
        _restarts_with_cycle_warmup,
        id="restarts_with_cycle_warmup",
    ),
    Case("one_cycle", ("scheduler.max_lr=0.2", "scheduler.pct_start=0.5"), _one_cycle),
    Case(
        "cyclic",
        ("scheduler.min_lr=0.01", "scheduler.up_epochs=1", "scheduler.down_epochs=2"),
        _cyclic,
    ),
    Case(
        "cyclic", ("scheduler.min_lr=0.02", "scheduler.up_epochs=1", "scheduler.mode=triangular2"), _cyclic_triangular2
    ),
    Case("reduce_on_plateau", (), lambda u, m: BASE_LR),
]


def named_updates(mode: Mode, warmup: int) -> list[int]:
    """Start, last warmup update, first after it, middle, end; then past the end."""
    inside = {0, warmup - 1, warmup, mode.total // 2, mode.total - 1}
    return sorted(u for u in inside if 0 <= u < mode.total)


@pytest.mark.parametrize("interval", ["step", "epoch"])
@pytest.mark.parametrize("case", CASES, ids=[case.id or case.name for case in CASES])
def test_lr_at_named_updates_matches_the_closed_form(compose_cfg, case, interval):
    mode = Mode(interval)
    cfg = compose_cfg(
        [
            f"scheduler={case.name}",
            f"scheduler.interval={interval}",
            f"trainer.epochs={EPOCHS}",
            f"optimizer.lr={BASE_LR}",
            *case.overrides,
        ]
    )
    curve = lr_curve(cfg, STEPS_PER_EPOCH)
    assert len(curve) == EPOCHS * STEPS_PER_EPOCH
    steps_per_update = STEPS_PER_EPOCH // mode.per_epoch
    for u in named_updates(mode, case.warmup(mode)):
        expected = case.lr(u, mode)
        first, last = u * steps_per_update, (u + 1) * steps_per_update - 1
        assert curve[first] == pytest.approx(expected, rel=1e-12, abs=1e-15), f"update {u}"
        assert curve[last] == curve[first], f"update {u} is one lr for all its steps"
    schedule = build_schedule(cfg.scheduler, Timeline(interval, STEPS_PER_EPOCH, EPOCHS, BASE_LR))
    for u in (mode.total, mode.total + 3):
        assert BASE_LR * schedule(u) == pytest.approx(case.lr(u, mode), rel=1e-12, abs=1e-15), f"past the end, {u}"


def test_every_scheduler_config_has_a_closed_form_case():
    from src import REPO_ROOT

    names = {path.stem for path in (REPO_ROOT / "conf" / "scheduler").glob("*.yaml")}
    assert names == {case.name for case in CASES}


def test_default_warmup_never_spends_a_step_at_lr_zero_and_reaches_the_peak_right_after(compose_cfg):
    cfg = compose_cfg(["scheduler=linear_warmup", "scheduler.warmup_steps=4", "trainer.epochs=1"])
    curve = lr_curve(cfg, 20)
    assert curve[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # 1/(W+1) ... 1 of optimizer.lr 0.1


def test_explicit_start_factor_zero_starts_at_zero(compose_cfg):
    cfg = compose_cfg(["scheduler=constant", "scheduler.warmup_steps=4", "scheduler.warmup_start_factor=0"])
    assert lr_curve(cfg, 10)[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])


def test_warmup_epochs_in_step_mode_is_epochs_times_steps_per_epoch(compose_cfg):
    cfg = compose_cfg(["scheduler=cosine_warmup", "scheduler.warmup_ratio=0", "scheduler.warmup_epochs=0.5"])
    curve = lr_curve(cfg, 10)  # W = round(0.5 * 10) = 5 steps
    assert curve[4] == pytest.approx(0.1 * 5 / 6) and curve[5] == pytest.approx(0.1)


def test_milestones_in_step_mode_fall_on_the_first_step_of_the_epoch(compose_cfg):
    cfg = compose_cfg(["scheduler=multistep", "scheduler.milestones=[1,2]", "scheduler.gamma=0.5", "trainer.epochs=3"])
    curve = lr_curve(cfg, 4)
    assert curve == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)


@pytest.mark.parametrize("epochs", [4, 8, 20])
def test_milestone_ratios_put_the_milestones_at_the_same_fractions_of_every_budget(compose_cfg, epochs):
    ratios = compose_cfg(["scheduler=multistep", "scheduler.milestone_ratios=[0.5,0.75]", f"trainer.epochs={epochs}"])
    given = [f"scheduler.milestones=[{epochs // 2},{3 * epochs // 4}]", f"trainer.epochs={epochs}"]
    assert lr_curve(ratios, 5) == lr_curve(compose_cfg(["scheduler=multistep", *given]), 5)


def test_milestone_ratios_outside_the_run_are_refused_by_name(compose_cfg):
    cfg = compose_cfg(["scheduler=multistep", "scheduler.milestone_ratios=[0.5,1.5]"])
    with pytest.raises(Exception, match=r"scheduler.milestone_ratios=\[0.5, 1.5\]: allowed is null or a non-empty"):
        lr_curve(cfg, 5)


def test_cosine_is_clamped_after_its_end_instead_of_rising_again(compose_cfg):
    cfg = compose_cfg(["scheduler=cosine", "scheduler.total_steps=10", "scheduler.final_lr=0.001", "trainer.epochs=3"])
    curve = lr_curve(cfg, 10)
    assert curve[10:] == [pytest.approx(0.001)] * 20
    assert all(later <= earlier for earlier, later in itertools.pairwise(curve))
