"""The `cairn` command: processes (server, daemon, up, pilot) and clients of the HTTP API.

Commands are imported when called (`cairn.cli.lazy_group`), so `cairn ls` pays for the import
of what `ls` needs, not of the whole CLI.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import click

from cairn import __version__
from cairn.cli.lazy_group import LazyGroup

COMMANDS = {
    "server": "cairn.cli.processes:server",
    "daemon": "cairn.cli.processes:daemon",
    "up": "cairn.cli.processes:up",
    "health": "cairn.cli.processes:health",
    "token": "cairn.cli.token:token",
    "whoami": "cairn.cli.token:whoami",
    "job": "cairn.cli.jobs:job",
    "pilot": "cairn.cli.jobs:pilot",
    "transformation": "cairn.cli.transformations:transformation",
    "production": "cairn.cli.productions:production",
    "replicate": "cairn.cli.requests:replicate",
    "upload": "cairn.cli.data:upload",
    "download": "cairn.cli.data:download",
    "stage": "cairn.cli.requests:stage",
    "requests": "cairn.cli.requests:requests",
    "transfers": "cairn.cli.transfers:transfers",
    "ls": "cairn.cli.namespace:ls",
    "stat": "cairn.cli.namespace:stat",
    "mkdir": "cairn.cli.namespace:mkdir",
    "mv": "cairn.cli.namespace:mv",
    "rm": "cairn.cli.namespace:rm",
    "chmod": "cairn.cli.namespace:chmod",
    "chown": "cairn.cli.namespace:chown",
    "register": "cairn.cli.files:register",
    "replicas": "cairn.cli.files:replicas",
    "se": "cairn.cli.ses:se",
    "site": "cairn.cli.ses:site",
    "meta": "cairn.cli.meta:meta",
    "find": "cairn.cli.meta:find",
    "dataset": "cairn.cli.datasets:dataset",
    "container": "cairn.cli.datasets:container",
    "ancestry": "cairn.cli.accounting:ancestry",
    "usage": "cairn.cli.accounting:usage",
    "feed": "cairn.cli.accounting:feed",
    "rule": "cairn.cli.rules:rule",
    "quota": "cairn.cli.rules:quota",
    "subscription": "cairn.cli.rules:subscription",
    "audit": "cairn.cli.audit:audit",
    "pilots": "cairn.cli.pilots:pilots",
    "vo": "cairn.cli.vos:vo",
    "identity": "cairn.cli.identities:identity",
}

# Subcommands of a group that live beside the features they serve.
GROUP_EXTRAS = {
    "se": ["cairn.cli.accounting:se_dump", "cairn.cli.rules:se_resolve", "cairn.cli.se_admin:se_add",
           "cairn.cli.se_admin:se_update"],
    "site": ["cairn.cli.se_admin:site_add", "cairn.cli.pilots:site_queues", "cairn.cli.pilots:site_queue_set"],
}


@click.group(cls=LazyGroup, lazy=COMMANDS, extra=GROUP_EXTRAS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cairn")
def cli() -> None:
    """Cairn: file and metadata catalogue, storage, transfers, rules and jobs."""


def main() -> None:
    """The `cairn` entry point: the command, then `leave` with its exit status."""
    try:
        cli(prog_name="cairn")
    except SystemExit as done:
        leave(done.code)


def leave(code: object) -> NoReturn:
    """End the process with a finished command's status, without the interpreter's teardown:
    freeing every module and object of a process about to end took 70-110 ms here, a quarter of
    a short command's time (`cairn stat` 0.20-0.27 -> 0.17-0.19 s; bench/cli_startup.py). What the ordinary
    exit does that matters is done first: the exit handlers (atexit, which logging and temporary
    directories use) and the flush of stdout and stderr, whose failure (a full disk, a closed
    pipe) is exit status 120 as the interpreter's own. The ordinary exit is taken instead while
    another thread still runs (it may be writing; the exit waits for it), and under a profiler or
    a tracer (`python -m cProfile -m cairn ...`, coverage), which write their results after the
    program returns."""
    if threading.active_count() > 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    if code is None or isinstance(code, int):
        status = code or 0
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if not stream.closed:
                stream.flush()
        except OSError:
            status = status or 120
    os._exit(status)
