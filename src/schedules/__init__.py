"""Learning-rate schedules, a layer of their own: pure pieces (core: a schedule is a function of the update index),
the timeline they are laid on (timeline: warmup, totals, key rules), the configs users choose (catalogue, one
factory per conf/scheduler/<name>.yaml), and the driver that applies one to an optimizer (driver).

May import: src.config.rules, torch, omegaconf/hydra (to build from a config). Never the training loop, runs or
analysis: the trainer, the preview and the range test all read the same curve from here.
"""

from src.schedules.core import Constant, CyclesMomentum, Decay, Join, Schedule, Warmup, WatchesMetrics
from src.schedules.driver import LRDriver, build_lr_driver, build_schedule, lr_curve, run_timeline, schedule_curves
from src.schedules.timeline import ScheduleConfigError, Timeline

__all__ = [
    "Constant",
    "CyclesMomentum",
    "Decay",
    "Join",
    "LRDriver",
    "Schedule",
    "ScheduleConfigError",
    "Timeline",
    "Warmup",
    "WatchesMetrics",
    "build_lr_driver",
    "build_schedule",
    "lr_curve",
    "run_timeline",
    "schedule_curves",
]
