"""The metadata query language on real data: every operator, inheritance, Any/Missing, wildcards,
groups, standard keys, scope, permissions, and errors with their position."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import register_files
from catalogue.find import open_query
from catalogue.meta_query import QueryError, compile_query
from catalogue.metadata import set_metadata
from catalogue.metadata_fields import FieldDeclaration, declare_field
from catalogue.namespace import chmod, mkdir
from kernel.db import Document
from kernel.errors import Forbidden
from kernel.principal import Principal
from tests.fixtures.catalogue import ADMIN, ALICE, BOB


@pytest.fixture
async def data(catalogue_db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    """/cta/mc (particle=proton, inherited) holds r1..r5 with runs 1..5; /cta/real holds x1, x2."""
    db = catalogue_db
    for key, kind in (("run", "int"), ("energy", "float"), ("taken", "datetime"), ("tags", "strings"),
                      ("site", "string")):
        await declare_field(db, FieldDeclaration(key=key, type=kind))  # type: ignore[arg-type]
    await mkdir(db, ADMIN, "/cta")
    await chmod(db, ADMIN, "/cta", 0o777)
    files = [{"lfn": f"/cta/mc/r{i}.root", "size": i * 100, "adler32": f"0000000{i}",
              "replicas": [{"se": "CERN-DISK"}] + ([{"se": "DESY-DISK"}] if i % 2 else []),
              "meta": {"run": i, "energy": i / 2, "taken": f"2024-01-0{i}T00:00:00Z", "tags": [f"t{i}", "all"],
                       **({"site": "CERN"} if i <= 2 else {})}} for i in range(1, 6)]
    files += [{"lfn": "/cta/real/x1.dat", "size": 7, "adler32": "000000aa", "meta": {"run": 10, "note": "12"}},
              {"lfn": "/cta/real/x2.dat", "size": 8, "adler32": "000000bb", "meta": {"note": "hello world"}}]
    result = await register_files(db, ALICE, files)
    assert not result["failed"]
    await set_metadata(db, ALICE, "/cta/mc", {"particle": "proton"})
    await set_metadata(db, ALICE, "/cta/mc/r5.root", {"particle": "gamma"})
    return db


async def find(db: AsyncDatabase[Document], query: str, scope: str = "/", who: Principal = ADMIN) -> list[str]:
    return [d["_id"].rsplit("/", 1)[1] async for d in await open_query(db, who, query, scope=scope)]


CASES = [
    ("run=3", ["r3.root"]),
    ("run!=3", ["r1.root", "r2.root", "r4.root", "r5.root", "x1.dat", "x2.dat"]),  # != includes files without run
    ("run!=3 run=Any", ["r1.root", "r2.root", "r4.root", "r5.root", "x1.dat"]),
    ("run<2", ["r1.root"]),
    ("run<=2", ["r1.root", "r2.root"]),
    ("run>4", ["r5.root", "x1.dat"]),
    ("run>=4 run<=5", ["r4.root", "r5.root"]),
    ("run in 1,3,10", ["r1.root", "r3.root", "x1.dat"]),
    ("run nin 1,2,3,4,5", ["x1.dat", "x2.dat"]),
    ("energy>=2.0", ["r4.root", "r5.root"]),
    ("taken<2024-01-03", ["r1.root", "r2.root"]),
    ("taken>=2024-01-04T00:00:00Z", ["r4.root", "r5.root"]),
    ("particle=proton", ["r1.root", "r2.root", "r3.root", "r4.root"]),  # inherited; r5 overrides
    ("particle=gamma", ["r5.root"]),
    ("particle=Any", ["r1.root", "r2.root", "r3.root", "r4.root", "r5.root"]),
    ("particle=Missing", ["x1.dat", "x2.dat"]),
    ("particle!=Any", ["x1.dat", "x2.dat"]),
    ("site!=Missing", ["r1.root", "r2.root"]),
    ("tags=t2", ["r2.root"]),
    ("tags!=all", ["x1.dat", "x2.dat"]),
    ("tags in t1,t4", ["r1.root", "r4.root"]),
    ("tags nin t1,t2,t3", ["r4.root", "r5.root", "x1.dat", "x2.dat"]),
    ("note=12", ["x1.dat"]),  # undeclared: the number 12 or the text "12"
    ("note='hello world'", ["x2.dat"]),
    ("note=hello*", ["x2.dat"]),
    ("note=\"hello*\"", []),  # quoted values are literal
    ("name=r?.root", ["r1.root", "r2.root", "r3.root", "r4.root", "r5.root"]),
    ("name!=*.root", ["x1.dat", "x2.dat"]),
    ("size>=400", ["r4.root", "r5.root"]),
    ("checksum=00000003", ["r3.root"]),
    ("se=DESY-DISK", ["r1.root", "r3.root", "r5.root"]),
    ("se!=DESY-DISK", ["r2.root", "r4.root", "x1.dat", "x2.dat"]),
    ("se nin CERN-DISK", ["x1.dat", "x2.dat"]),
    ("owner=alice status=active run=2", ["r2.root"]),
    ("run=1 or run=2 | run=10", ["r1.root", "r2.root", "x1.dat"]),
    ("(run=1 or run=5) and particle=proton", ["r1.root"]),
    ("(run=1 or run=5) & (particle=gamma or site=CERN)", ["r1.root", "r5.root"]),
    ("run>=1 and (tags=t3 or (energy<1 se=DESY-DISK))", ["r1.root", "r3.root"]),
    ("meta.run=4", ["r4.root"]),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[q for q, _ in CASES])
async def test_operator(data: AsyncDatabase[Document], query: str, expected: list[str]) -> None:
    assert await find(data, query) == expected


async def test_scope_limits_results_to_a_subtree(data: AsyncDatabase[Document]) -> None:
    assert await find(data, "size>=0", scope="/cta/real") == ["x1.dat", "x2.dat"]
    assert await find(data, "particle=Missing", scope="/cta/mc") == []


async def test_a_query_inherits_values_set_after_registration(data: AsyncDatabase[Document]) -> None:
    await set_metadata(data, ADMIN, "/cta/real", {"particle": "cosmic"})
    assert await find(data, "particle=cosmic") == ["x1.dat", "x2.dat"]


async def test_results_respect_read_permission(data: AsyncDatabase[Document]) -> None:
    await chmod(data, ALICE, "/cta/mc/r1.root", 0o600)
    await chmod(data, ALICE, "/cta/real", 0o700)
    assert await find(data, "size>=0", who=BOB) == ["r2.root", "r3.root", "r4.root", "r5.root"]
    with pytest.raises(Forbidden):
        await find(data, "size>=0", scope="/cta/real", who=BOB)


async def test_each_query_is_one_database_filter(data: AsyncDatabase[Document]) -> None:
    flt = compile_query("(run=1 or run=5) and particle=proton", {"run": "int"})
    assert flt == {"$and": [{"$or": [{"meta_effective.run": 1}, {"meta_effective.run": 5}]},
                            {"meta_effective.particle": "proton"}]}


ERRORS = [
    ("run>=abc", 5, "int"),
    ("(run=1 or run=2", 0, "never closed"),
    ("run=1)", 5, "without a matching"),
    ("run ~ 5", 4, "expected an operator"),
    ("run==5", 3, "unknown operator"),
    ("run=", 4, "value is missing"),
    ("run>Any", 4, "= and != only"),
    ("run=1 or", 8, "ends too early"),
    ("size>*", 5, "wildcards"),
    ("taken>=soon", 7, "ISO 8601"),
    ("", 0, "empty"),
    ("note='open", 5, "unterminated"),
]


@pytest.mark.parametrize(("query", "position", "message"), ERRORS, ids=[q or "empty" for q, _, _ in ERRORS])
async def test_syntax_and_type_errors_name_the_position(
    data: AsyncDatabase[Document], query: str, position: int, message: str
) -> None:
    with pytest.raises(QueryError, match=message) as caught:
        await find(data, query)
    assert caught.value.details["position"] == position
    assert caught.value.status == 400
    assert caught.value.message.endswith(" " * position + "^")
