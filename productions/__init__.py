"""Transformations (input query → tasks → jobs, with per-file status) and productions (chains of
transformations); fed by the catalogue's change feed."""
