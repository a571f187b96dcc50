"""What runs came to, read back and judged: run folders (runs.py), their TensorBoard curves (events.py), the
verdict's statistics (stats.py), a previewed lr curve's CSV and figure (lr_plots.py), the comparison report of
`python -m src.compare` (compare.py) and the study of `python -m src.study` (study/).

It may import src.runs, src.schedules, src.training.tracking, src.lr_range and src.config; nothing imports it but
the commands (src/compare.py, src/study.py, src/preview.py) and the sweep's summary hook (src.config.hooks).
"""
