"""Assembles Cairn's packages into processes: the API server, the daemons, `cairn up` and the CLI."""

__version__ = "0.1.0"
