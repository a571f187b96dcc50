"""A study: the plan and its checks (plan.py), the batches of its stages and the lrs picked (stages.py), its one
launch (run.py), each condition's verdict (verdict.py) and the report's files (report.py). The runner imports the
plan, the stages and the report; the report the verdict and the plan; the plan neither: a plan is read, checked and
continued without the report's plotting or the runner's processes.

Besides these it may import what src.analysis may (and src.analysis.runs, src.analysis.stats); only src/study.py
imports it.
"""
