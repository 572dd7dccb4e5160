"""Data movement: the request queue and the daemons that move bytes (transfer workers, stager,
reaper) and converge rules (evaluator, repairer, cleaner)."""
