"""The run machinery: the training loop (`trainer`), checkpoints (`checkpoint`), optimizers and
the lr rule (`optim`), divergence checks, metric logging (`logger`), the run-directory guard
(`rundir`), sweep bookkeeping (`sweep`), the Optuna search (`search`) and sharing a model (`hub`,
`card`).

May import: every package below it (core, config, data, model, objectives, remedies, metrics).
"""
