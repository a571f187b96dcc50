"""src.analysis.events: a run folder's event files read back whole: every scalar point, the image tags, the
HParams records."""

from __future__ import annotations

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from src.analysis.events import read_events, read_scalars

POINTS = 10_050  # TensorBoard's own reader keeps a sample of 10,000 points per tag unless told otherwise


def test_every_scalar_point_is_read_in_order_and_a_missing_tag_is_an_empty_curve(tmp_path):
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        for step in range(POINTS):
            writer.add_scalar("train/lr", step / 2, step)
        writer.add_scalar("test/acc", 0.5, 7)
        writer.add_image("lr_find/curve", np.zeros((4, 4, 3), dtype=np.uint8), 0, dataformats="HWC")
    assert read_scalars(tmp_path) == {
        "train/lr": [(step, step / 2) for step in range(POINTS)],
        "test/acc": [(7, 0.5)],
    }
    events = read_events(tmp_path)
    assert events.steps("test/acc") == [7] and events.values("test/acc") == [0.5]
    assert events.steps("test/loss") == [] and events.values("test/loss") == []
    assert events.images == ["lr_find/curve"]
    assert events.hparams == {}  # no HParams record written
