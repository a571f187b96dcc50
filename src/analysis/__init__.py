"""What runs came to, read back and judged: run folders (runs.py), their TensorBoard curves (events.py), the
verdict's statistics (stats.py), the comparison report of `python -m src.compare` (compare.py) and the study of
`python -m src.study` (study/).

It may import src.runs, src.training.tracking, src.lr_range and src.config; nothing imports it but the two commands
(src/compare.py, src/study.py) and the sweep's summary hook (src.config.hooks.SweepSummary).
"""
