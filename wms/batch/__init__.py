"""Batch systems the pilot factory submits pilots to.

A backend submits N pilots at once (each a shell script with its own log file), tells the
state of many batch jobs in one call, kills one, and counts what a queue holds. States are the
factory's, not the batch system's: waiting, running, done, failed, aborted (killed by the batch
system or an operator), lost (the batch system no longer knows the job).

Backends: `local` (child processes of the factory, the embedded default `cairn up` uses) and
`slurm` (sbatch/squeue/sacct/scancel). Extension points, not yet written: an HTCondor backend
would submit one cluster of N procs with `condor_submit` (batch id CLUSTER.PROC), read states from
`condor_q -json` then `condor_history -json`, kill with `condor_rm`; an ARC backend would submit
with `arcsub` (the job id is a URL), read states with `arcstat`, kill with `arckill` and fetch
logs with `arcget`. Each only implements `BatchBackend` and registers in
`wms.batch.backends.backend_for`; the interface is `wms.batch.interface`.
"""
