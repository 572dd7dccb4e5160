"""Test bed: real servers on loopback (see tests/fixtures/)."""

pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.api",
    "tests.fixtures.grid",
    "tests.fixtures.catalogue",
]
