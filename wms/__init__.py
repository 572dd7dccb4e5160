"""The job layer: submission, input-data resolution, task queues, matching and the pilot."""
