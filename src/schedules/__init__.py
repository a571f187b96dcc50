"""Learning-rate schedules: pure pieces (core), their configs (catalogue), and the driver the trainer uses."""

from src.schedules.core import Constant, Cosine, Join, Linear, Schedule, Warmup
from src.schedules.driver import LRDriver, build_lr_driver, build_schedule, lr_curve, schedule_curves
from src.schedules.timeline import ScheduleConfigError, Timeline

__all__ = [
    "Constant",
    "Cosine",
    "Join",
    "LRDriver",
    "Linear",
    "Schedule",
    "ScheduleConfigError",
    "Timeline",
    "Warmup",
    "build_lr_driver",
    "build_schedule",
    "lr_curve",
    "schedule_curves",
]
