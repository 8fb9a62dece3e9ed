"""Stage: models. Reads ``RUN/prepared/``; writes ``RUN/models/<name>/`` (fold checkpoints, folds.csv,
summary.json), ``RUN/predictions/<name>.csv`` and, for ``select``, ``RUN/selection.json``."""
