"""The `cairn` command: processes (server, daemon, up, pilot) and clients of the HTTP API."""

from __future__ import annotations

import click

from cairn import __version__
from cairn.cli import (
    accounting,
    audit,
    data,
    datasets,
    files,
    jobs,
    meta,
    namespace,
    pilots,
    processes,
    productions,
    requests,
    rules,
    se_admin,
    ses,
    token,
    transfers,
    transformations,
    vos,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cairn")
def cli() -> None:
    """Cairn: file and metadata catalogue, storage, transfers, rules and jobs."""


cli.add_command(processes.server)
cli.add_command(processes.daemon)
cli.add_command(processes.up)
cli.add_command(processes.health)
cli.add_command(token.token)
cli.add_command(token.whoami)
cli.add_command(jobs.job)
cli.add_command(jobs.pilot)
cli.add_command(transformations.transformation)
cli.add_command(productions.production)
cli.add_command(requests.replicate)
cli.add_command(data.upload)
cli.add_command(data.download)
cli.add_command(requests.stage)
cli.add_command(requests.requests)
cli.add_command(transfers.transfers)
for command in (namespace.ls, namespace.stat, namespace.mkdir, namespace.mv, namespace.rm, namespace.chmod,
                namespace.chown, files.register, files.replicas, ses.se, ses.site, meta.meta, meta.find,
                datasets.dataset, datasets.container, accounting.ancestry, accounting.usage, rules.rule, rules.quota,
                rules.subscription):
    cli.add_command(command)
ses.se.add_command(accounting.se_dump)
cli.add_command(accounting.feed)
ses.se.add_command(rules.se_resolve)
cli.add_command(audit.audit)
ses.se.add_command(se_admin.se_add)
ses.se.add_command(se_admin.se_update)
ses.site.add_command(se_admin.site_add)

cli.add_command(pilots.pilots)
cli.add_command(vos.vo)
ses.site.add_command(pilots.site_queues)
ses.site.add_command(pilots.site_queue_set)


def main() -> None:
    cli(prog_name="cairn")
