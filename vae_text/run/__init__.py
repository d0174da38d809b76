"""The run machinery: the training loop (`trainer`), checkpoints (`checkpoint`), optimizers and
the lr rule (`optim`), divergence checks, metric logging (`logger`), the run-directory guard
(`rundir`), what a resume may change in a run directory (`record`), sweep bookkeeping (`sweep`,
`sweepjob`), the Optuna search (`search`) and sharing a model (`hub`, `card`).

May import: every package below it (core, config, data, model, objectives, remedies, metrics).
"""
