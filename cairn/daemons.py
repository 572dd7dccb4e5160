"""Running one daemon process (`cairn daemon NAME`)."""

from __future__ import annotations

import logging

from cairn.components import daemon_factories, index_specs
from kernel import event_loop
from kernel.collector import settle_collector
from kernel.db import close_client, ensure_indexes, get_database
from kernel.errors import InvalidInput
from kernel.settings import Settings
from storage_plugins.registry import close_plugins


def known_daemons() -> list[str]:
    return sorted(daemon_factories())


async def run_daemon(settings: Settings, name: str, *, max_cycles: int | None = None) -> None:
    factories = daemon_factories()
    if name not in factories:
        raise InvalidInput(f"unknown daemon {name!r}; known: {', '.join(sorted(factories)) or 'none'}")
    db = get_database(settings)
    daemon = factories[name](settings, db)
    daemon.install_signal_handlers()
    try:
        await ensure_indexes(db, index_specs())
    except Exception as exc:
        logging.getLogger("cairn.daemon").warning("indexes not ensured yet: %s", exc)
    try:
        await daemon.run(max_cycles=max_cycles)
    finally:
        await close_plugins()  # their HTTP sessions and connections, else reported unclosed at exit
        await close_client()


def main(settings: Settings, name: str) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settle_collector()
    event_loop.run(run_daemon(settings, name))
