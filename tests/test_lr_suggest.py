"""The range test's arithmetic on synthetic curves: the ramp, the smoothing, the stop rule, the three suggestions,
and reading a suggestion back."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from src.lr_range.suggest import (
    Smoother,
    SuggestionError,
    ramp,
    read_suggestion,
    should_stop,
    steepest_index,
    suggest,
    suggestions_record,
    valley_index,
    window,
)


def dip(lrs: list[float], centre: float, width: float = 0.25, blow_up: float | None = None) -> list[float]:
    """A range test's typical loss: flat at 2.3, falling fastest at `centre` (a logistic in log10 lr) to 0.3, then
    rising steeply beyond `blow_up`."""
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        loss = 2.3 - 2.0 / (1 + math.exp(-(x - math.log10(centre)) / width))
        if blow_up is not None and lr > blow_up:
            loss += 10 * (x - math.log10(blow_up)) ** 2
        losses.append(loss)
    return losses


def fastai_valley(losses: list[float]) -> int:
    """fastai's `valley` (fastai/callback/schedule.py), quadratic loop and all, as the reference."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def test_ramp_runs_from_min_to_max_exponentially_or_linearly():
    exp = ramp(1e-6, 10.0, 8, "exp")
    assert exp[0] == pytest.approx(1e-6) and exp[-1] == pytest.approx(10.0)
    ratios = [b / a for a, b in itertools.pairwise(exp)]
    assert ratios == pytest.approx([ratios[0]] * 7)  # a fixed factor per step
    linear = ramp(0.1, 1.0, 10, "linear")
    assert linear == pytest.approx([0.1 * (i + 1) for i in range(10)])
    with pytest.raises(ValueError, match="mode='cubic'"):
        ramp(0.1, 1.0, 10, "cubic")


def test_smoothing_is_bias_corrected_and_the_stop_rule_compares_with_the_best():
    smoother = Smoother(0.98)
    assert [smoother(2.0) for _ in range(5)] == pytest.approx([2.0] * 5)  # no pull towards 0 at the start
    smoother = Smoother(0.5)
    assert smoother(4.0) == pytest.approx(4.0)
    assert smoother(2.0) == pytest.approx((0.25 * 4 + 0.5 * 2) / 0.75)
    assert not should_stop(3.9, best=1.0, stop_factor=4.0)
    assert should_stop(4.1, best=1.0, stop_factor=4.0)
    assert should_stop(math.nan, best=1.0, stop_factor=None)
    assert not should_stop(1e9, best=1.0, stop_factor=None)


def test_the_window_leaves_out_the_first_tenth_and_the_blow_up_of_a_stopped_test():
    assert window(100, stopped_early=False) == range(10, 100)
    assert window(100, stopped_early=True) == range(10, 95)


@pytest.mark.parametrize("mode", ["exp", "linear"])
@pytest.mark.parametrize("centre", [1e-3, 3e-2, 0.5])
def test_every_suggestion_lies_in_the_swept_range_and_steepest_is_where_the_loss_falls_fastest(mode, centre):
    lrs = ramp(1e-5, 10.0, 200, mode)
    rng = np.random.default_rng(0)
    raw = np.array(dip(lrs, centre, blow_up=3.0)) + rng.normal(0, 0.05, len(lrs))
    smoother = Smoother(0.9)
    smoothed = [smoother(loss) for loss in raw]
    suggestions = suggest(lrs, smoothed, stopped_early=False)
    assert set(suggestions) == {"valley", "steepest", "min_div10"}
    for suggestion in suggestions.values():
        assert 1e-5 <= suggestion.lr <= 10.0, suggestion
    # steepest: the most negative slope of the smoothed loss per ramp step, over the curve it reads
    kept = list(window(len(lrs), stopped_early=False))
    fastest = kept[int(np.argmin(np.gradient(np.array(smoothed)[kept])))]
    assert suggestions["steepest"].lr == pytest.approx(lrs[fastest], rel=5e-3)


def test_steepest_lands_on_the_known_steepest_point_of_a_clean_curve():
    lrs = ramp(1e-5, 10.0, 301, "exp")  # 50 steps per decade: 1e-2 is step 150
    smoothed = dip(lrs, centre=1e-2)
    index = steepest_index(smoothed)
    assert index == 150
    assert suggest(lrs, smoothed, stopped_early=False)["steepest"].lr == pytest.approx(1e-2, rel=1e-2)


def test_valley_matches_fastais_rule_and_min_div10_is_a_decade_below_the_lowest_loss():
    rng = np.random.default_rng(1)
    for _ in range(20):
        losses = list(np.cumsum(rng.normal(-0.01, 0.05, 60)) + 2.3)
        assert valley_index(losses)[0] == min(max(fastai_valley(losses), 0), len(losses) - 1)
    lrs = ramp(1e-5, 10.0, 121, "exp")
    smoothed = dip(lrs, centre=1e-2, blow_up=0.3)
    lowest = min(range(len(lrs)), key=smoothed.__getitem__)
    assert suggest(lrs, smoothed, stopped_early=True)["min_div10"].lr == pytest.approx(lrs[lowest] / 10, rel=5e-3)


def test_a_curve_lowest_at_its_start_still_suggests_inside_the_range():
    lrs = ramp(1e-3, 1.0, 50, "exp")
    rising = [2.0 + i * 0.01 for i in range(50)]
    suggestions = suggest(lrs, rising, stopped_early=False)
    assert all(1e-3 <= suggestion.lr <= 1.0 for suggestion in suggestions.values())
    assert "raised to the ramp's start" in suggestions["min_div10"].detail


def test_too_short_a_curve_has_no_suggestion():
    with pytest.raises(SuggestionError, match="at least 5 are needed"):
        suggest([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0], [2.3, 2.2, 2.0, 1.9, 3.0, 9.0, 20.0], stopped_early=True)


def test_read_suggestion_takes_the_folder_or_the_file_and_says_what_is_wrong(tmp_path):
    lrs = ramp(1e-5, 10.0, 100, "exp")
    suggestions = suggest(lrs, dip(lrs, centre=1e-2), stopped_early=False)
    (tmp_path / "suggestions.json").write_text(json.dumps(suggestions_record(suggestions, "valley")))
    assert read_suggestion(tmp_path) == suggestions["valley"].lr
    assert read_suggestion(tmp_path / "suggestions.json", rule="steepest") == suggestions["steepest"].lr
    with pytest.raises(SuggestionError, match="does not exist"):
        read_suggestion(tmp_path / "nowhere")
    with pytest.raises(SuggestionError, match=r"holds no suggestions\.json"):
        read_suggestion(tmp_path.parent)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SuggestionError, match="holds no readable lr"):
        read_suggestion(tmp_path / "broken.json")
