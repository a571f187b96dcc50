"""A plateau schedule inside a real (tiny, synthetic) run: the trainer's epoch metrics drive its cuts."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from src.train import run


def test_reduce_on_plateau_cuts_on_the_metrics_the_trainer_reports(compose_cfg, synthetic_root, tmp_path):
    cfg = compose_cfg(
        [
            f"data.root={synthetic_root}",
            "data.batch_size=128",
            "trainer.epochs=4",
            "trainer.progress=false",
            "trainer.threads=1",
            "scheduler=reduce_on_plateau",
            "scheduler.interval=epoch",
            "scheduler.monitor=train_acc",
            "scheduler.mode=min",  # a rising accuracy counts as no improvement here, so cuts are bound to come
            "scheduler.patience=0",
            "scheduler.factor=0.5",
        ]
    )
    result = run(cfg, tmp_path)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plateau = lr_scheduler.ReduceLROnPlateau(reference, mode="min", factor=0.5, patience=0)
    expected = []
    for epoch in result.history:
        expected.append(reference.param_groups[0]["lr"])
        plateau.step(epoch["train_acc"])
    assert [epoch["lr"] for epoch in result.history] == expected
    assert expected[-1] < 0.1
