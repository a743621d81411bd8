"""The run machinery: run folders and resume rules, checkpoints, logs, command-line flags, presets,
errors, interruption, progress, seeding, distributed set-up, speed settings, evaluation metrics
(top-1/top-5, per class, many/medium/few: the long-tailed benchmark's, shared by every method)
and reports.

Imports: `utils/` imports none of `datasets/`, `models/` and `glmc/` (the method), so any of
them can use it.
"""
