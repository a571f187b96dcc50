"""A study: the plan and its checks (plan.py), the stages run and the lrs picked (run.py), the verdict and its files
(report.py). The runner imports the plan and the report, the report the plan, and the plan neither: a plan is read,
checked and continued without the report's plotting or the runner's processes.

Besides these it may import what src.analysis may (and src.analysis.runs, src.analysis.stats); only src/study.py
imports it.
"""
