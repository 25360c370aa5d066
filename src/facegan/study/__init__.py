"""Hyperparameter studies: a TOML spec (spec.py) -> trials run as ordinary runs, locally or by workers
on several machines sharing an Optuna storage (runner.py) -> one report across them (report.py)."""
