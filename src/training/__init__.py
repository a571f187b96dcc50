"""Training: the device-resident data and the datasets (data.py, datasets/), the models, the optimizers, where a run
computes (device.py), the epoch loop and its one training step (trainer.py), the curves it writes (tracking.py),
and one whole run built from a checked config into its folder (run.py).

It may import src.config.rules, src.runs and src.schedules; nothing above it (src.config's validation, src.lr_range,
the commands). The trainer's settings and every key's rules (KEY_RULES) sit beside the code that reads them.
"""
