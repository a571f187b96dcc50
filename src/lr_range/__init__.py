"""The LR range test and what reads it: the test on the run's own training step (find.py), the rules that read its
curve into a suggested lr (suggest.py), and a run taking its lr from a test (lr_from.py).

It may import src.training, src.config, src.runs and src.schedules; src.config.validation gathers its key rules.
"""
