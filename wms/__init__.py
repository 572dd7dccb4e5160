"""The job layer: jobs run where their input data is.

    submission   POST /jobs: validate, expand parametric descriptions, store as `received`
    checking     job-checker daemon: one catalogue query per batch resolves inputs to replicas;
                 jobs go to the task queue of the sites holding their inputs on disk (`waiting`),
                 ask for tape-only inputs to be copied to disk (`staging`), or fail naming the
                 inputs that exist nowhere
    task_queues  waiting jobs grouped by requirements, group and priority
    matching     POST /jobs/match: fair share between groups, then priority; the claim is atomic
    pilot        `cairn pilot --site S`: fetch inputs, run the payload, upload and register outputs
    execution    what pilots report (start, heartbeat, outputs, end), guarded by attempt and pilot
    control      kill and reschedule; the job-watchdog daemon turns silent jobs into stalled ones
                 and reschedules them a bounded number of times
"""
