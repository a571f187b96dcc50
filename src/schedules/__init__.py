"""Learning-rate schedules: pure pieces (core), their configs (catalogue), and the driver the trainer uses."""

from src.schedules.core import Constant, Decay, Join, Schedule, Warmup
from src.schedules.driver import LRDriver, build_lr_driver, build_schedule, lr_curve, run_timeline, schedule_curves
from src.schedules.timeline import ScheduleConfigError, Timeline

__all__ = [
    "Constant",
    "Decay",
    "Join",
    "LRDriver",
    "Schedule",
    "ScheduleConfigError",
    "Timeline",
    "Warmup",
    "build_lr_driver",
    "build_schedule",
    "lr_curve",
    "run_timeline",
    "schedule_curves",
]
