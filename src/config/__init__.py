"""The configuration and what Hydra does with it.

- `rules`: Rule, Problem, ConfigError, the words of every check; imports nothing of the project.
- `validation`: checks a composed config before anything runs, gathering each owner's `KEY_RULES`.
- `overrides`: the command line checked before Hydra composes (a mistyped group or key, with what it meant).
- `hooks`: the resolvers (`register_resolvers`) and the Hydra callbacks each command chooses in
  conf/hydra/callbacks/ (output folder check, sweep summary, failed jobs); imports src.runs.
- `plugins`: the Hydra plugins that come as extras, named when a command needs a missing one.
"""
