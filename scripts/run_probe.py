"""`python scripts/run_probe.py OUT.json [overrides]`: run `python -m src.train [overrides]` in this process, and write
to OUT.json the wall-clock time (`time.time()`) at which each phase of the run ended, for scripts/bench.py.

The run is the one `python -m src.train` makes (runpy, as `-m` does); only light wrappers are added around the
functions that end a phase. Stamps, in order: `started` (this file's first line), `import torch`, `imports` (the
rest of what src.train imports), `compose` (Hydra's compose and job set-up, up to the config check), `check` (the
config check), `data`, `setup` (model, optimizer, lr driver, TensorBoard writer, the first checkpoint: up to the
first epoch), `first step` (the first optimizer step), `epochs` (the end of each epoch, its checkpoint written),
`end` (after the run, before the interpreter shuts down). `dynamo_seconds` is how long the first import of
torch._dynamo took and `dynamo_during` in which phase it happened: every torch.optim optimizer imports it.
"""

import time

STAMPS: dict = {"started": time.time()}

import atexit  # noqa: E402  (the stamps above must come first)
import builtins  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

DYNAMO = "torch._dynamo"
_real_import = builtins.__import__
_depth = 0


def _timed_import(name, globals=None, locals=None, fromlist=(), level=0):
    """builtins.__import__, timing the outermost import that brings torch._dynamo in."""
    global _depth
    if DYNAMO in sys.modules:
        return _real_import(name, globals, locals, fromlist, level)
    _depth += 1
    started = time.perf_counter()
    try:
        return _real_import(name, globals, locals, fromlist, level)
    finally:
        _depth -= 1
        if _depth == 0 and DYNAMO in sys.modules:
            STAMPS["dynamo_seconds"] = time.perf_counter() - started
            STAMPS["dynamo_during"] = _phase()


def _phase() -> str:
    """The phase running now: the one after the last stamp taken."""
    order = ["started", "import torch", "imports", "compose", "check", "data", "setup", "first step"]
    done = [name for name in order if name in STAMPS]
    return order[len(done)] if len(done) < len(order) else "epochs"


def _stamp_after(owner, name: str, stamp: str) -> None:
    """Stamp `stamp` when `owner.name` returns (the first time)."""
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        STAMPS.setdefault(stamp, time.time())
        return result

    setattr(owner, name, wrapper)


def _write(path: str) -> None:
    STAMPS["end"] = time.time()
    with open(path, "w") as handle:
        json.dump(STAMPS, handle, indent=2)


def main() -> None:
    out, overrides = sys.argv[1], sys.argv[2:]
    builtins.__import__ = _timed_import
    # As `python -m src.train` does before its imports; src.train's own __main__ block turns the collector back on.
    gc.disable()
    import torch  # noqa: F401

    STAMPS["import torch"] = time.time()
    import src.train  # noqa: F401
    from src.config import validation
    from src.runs import checkpoints as checkpointing
    from src.training import data, trainer
    from src.training.trainer import Trainer

    STAMPS["imports"] = time.time()
    check = validation.validate

    def timed_check(cfg):
        STAMPS.setdefault("compose", time.time())
        check(cfg)
        STAMPS.setdefault("check", time.time())

    validation.validate = timed_check
    _stamp_after(data, "load", "data")
    step = trainer.train_step  # the config check's stand-in optimizer steps too: only the trainer's step counts

    def timed_step(*args, **kwargs):
        done = step(*args, **kwargs)
        STAMPS.setdefault("first step", time.time())
        return done

    trainer.train_step = timed_step
    fit = Trainer.fit

    def timed_fit(self):
        STAMPS.setdefault("setup", time.time())
        return fit(self)

    Trainer.fit = timed_fit
    checkpoint = checkpointing.Checkpointer.__call__

    def timed_checkpoint(self, trainer):
        checkpoint(self, trainer)
        if "setup" in STAMPS:  # the first call, before the epochs, is part of the set-up
            STAMPS.setdefault("epochs", []).append(time.time())

    checkpointing.Checkpointer.__call__ = timed_checkpoint
    atexit.register(_write, out)
    sys.argv = ["src.train", *overrides]
    # src.train is already imported (so its imports are timed above); runpy runs it again as __main__, as -m does.
    warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
    runpy.run_module("src.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
