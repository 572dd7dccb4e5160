"""Data movement: the request queue and the daemons that move bytes (transfer workers, stager,
reaper, the per-link optimizer), deletion, and their HTTP routes and SDK calls (`client`).
Rules live in `rules`, upload and download in `dataio`."""
