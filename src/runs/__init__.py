"""A run's life on disk, apart from its training: why a run stops and with which exit status (errors), files
written whole or not at all (files), the run folder's record, failed.json and a refused run's folders (folder),
checkpoints and their format checks (checkpoints), which checkpoint a command continues and whether it may, the
run lock and the command that continues a run (resume), the one signal handler (signals), what Hydra says of the
running session (session), and a stage that ends with its study (parent_watch).

It may import `src.config.rules` and nothing else of the project: nothing from training, schedules, analysis or
the other config modules (those import it)."""
