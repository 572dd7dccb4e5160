"""A package writes only the collections it owns; another package's data changes through the
owner's functions (e.g. `catalogue.replicas.remove_replicas`, which keeps usage in step).

Static: every `db[NAME].<write>(...)` in the product code is resolved to its collection (NAME a
constant defined in one module, imported by name or through its module) and checked against
OWNERS. A collection name defined twice is an error too (one definition per collection).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernel", "catalogue", "transfers", "rules", "storage_plugins", "wms", "productions", "dataio", "cairn")
WRITES = {"insert_one", "insert_many", "update_one", "update_many", "delete_one", "delete_many", "replace_one",
          "bulk_write", "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "drop"}
# Which package may write each collection.
OWNERS = {
    "leases": "kernel", "token_revocations": "kernel",
    "files": "catalogue", "directories": "catalogue", "datasets": "catalogue", "dataset_files": "catalogue",
    "moved_paths": "catalogue", "guid_holds": "catalogue",
    "container_children": "catalogue", "usage": "catalogue", "usage_claims": "catalogue",
    "dataset_count_claims": "catalogue",
    "storage_elements": "catalogue", "sites": "catalogue", "vos": "catalogue", "retired_vos": "catalogue",
    "identities": "catalogue",
    "metadata_fields": "catalogue", "meta_effective": "catalogue", "meta_origin": "catalogue",
    "rules": "rules", "locks": "rules", "subscriptions": "rules", "quotas": "rules", "account_usage": "rules",
    "catalogue_events": "catalogue", "feed_consumers": "catalogue",
    "feed_sequence": "catalogue",
    "transfer_requests": "transfers", "request_turns": "transfers", "transfer_activity_shares": "transfers",
    "link_stats": "transfers",
    "link_hours": "transfers",
    "audit_runs": "transfers", "audit_entries": "transfers",
    "jobs": "wms", "job_claims": "wms", "counters": "wms", "task_queues": "wms", "task_queue_entries": "wms",
    "group_usage": "wms", "pilots": "wms",
    "transformations": "productions", "transformation_files": "productions", "transformation_tasks": "productions",
    "productions": "productions",
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return found


def constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "literal"` assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    out[target.id] = node.value.value
    return out


def collection_names() -> tuple[dict[str, ast.Module], dict[str, dict[str, str]]]:
    """Each module's syntax tree, and its constants: its own, and those it imports by name
    (followed through re-exports)."""
    trees = {name: ast.parse(path.read_text()) for name, path in modules().items()}
    own = {name: constants(tree) for name, tree in trees.items()}
    visible = {name: dict(consts) for name, consts in own.items()}
    for _ in range(5):
        for name, tree in trees.items():
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module in visible and node.level == 0:
                    for alias in node.names:
                        if alias.name in visible[node.module]:
                            visible[name][alias.asname or alias.name] = visible[node.module][alias.name]
    return trees, visible


def defined(trees: dict[str, ast.Module]) -> dict[str, dict[str, str]]:
    return {name: constants(tree) for name, tree in trees.items()}


def resolver(module: str, tree: ast.Module, consts: dict[str, dict[str, str]]):
    names = dict(consts.get(module, {}))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name in consts.get(node.module, {}):
                    names[local] = consts[node.module][alias.name]
                elif f"{node.module}.{alias.name}" in consts:
                    aliases[local] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name

    def resolve(key: ast.expr) -> str | None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        if isinstance(key, ast.Name):
            return names.get(key.id)
        if isinstance(key, ast.Attribute) and isinstance(key.value, ast.Name) and key.value.id in aliases:
            return consts.get(aliases[key.value.id], {}).get(key.attr)
        return None
    return resolve


def writes(module: str, tree: ast.Module, consts: dict[str, dict[str, str]]) -> list[tuple[int, str, str]]:
    """(line, collection, method) of every write in a module: `db[NAME].<write>(...)`, the same
    through a variable assigned `db[NAME]`, and `bulk_write_chunked(db[NAME], ...)`."""
    resolve = resolver(module, tree, consts)

    def collection_of(expr: ast.expr) -> str | None:
        return resolve(expr.slice) if isinstance(expr, ast.Subscript) else None

    variables = {target.id: name for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and (name := collection_of(node.value)) is not None
                 for target in node.targets if isinstance(target, ast.Name)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in WRITES:
            target = func.value
            collection = variables.get(target.id) if isinstance(target, ast.Name) else collection_of(target)
            if collection is not None:
                out.append((node.lineno, collection, func.attr))
        elif isinstance(func, ast.Name | ast.Attribute) and node.args and \
                (func.id if isinstance(func, ast.Name) else func.attr) == "bulk_write_chunked":
            collection = collection_of(node.args[0])
            if collection is not None:
                out.append((node.lineno, collection, "bulk_write_chunked"))
    return out


def test_every_write_is_to_a_collection_of_the_writing_package() -> None:
    trees, consts = collection_names()
    wrong = []
    for module, tree in trees.items():
        package = module.split(".")[0]
        for line, collection, method in writes(module, tree, consts):
            owner = OWNERS.get(collection)
            if owner is None:
                wrong.append(f"{module}:{line} writes {collection!r}, which has no owner in OWNERS")
            elif owner != package:
                wrong.append(f"{module}:{line} {method} on {collection!r}, owned by {owner}")
    assert not wrong, "\n".join(sorted(wrong))


def test_each_collection_name_is_defined_once() -> None:
    trees, _ = collection_names()
    where: dict[str, list[str]] = {}
    for module, names in defined(trees).items():
        for name, value in names.items():
            if value in OWNERS:
                where.setdefault(value, []).append(f"{module}.{name}")
    twice = {value: places for value, places in where.items() if len(places) > 1}
    assert not twice, twice


def test_the_check_sees_a_write_through_an_imported_constant() -> None:
    source = "from catalogue.files import FILES\nasync def f(db):\n    await db[FILES].update_one({}, {})\n"
    _, consts = collection_names()
    assert writes("transfers.example", ast.parse(source), consts) == [(3, "files", "update_one")]


def test_the_check_sees_writes_through_a_variable_and_the_bulk_helper() -> None:
    source = ("from catalogue import usage\nfrom kernel.db import bulk_write_chunked\nasync def f(db):\n"
              "    files = db['files']\n    await files.delete_many({})\n"
              "    await bulk_write_chunked(db[usage.USAGE], [])\n")
    _, consts = collection_names()
    assert sorted(writes("wms.example", ast.parse(source), consts)) == [
        (5, "files", "delete_many"), (6, "usage", "bulk_write_chunked")]
