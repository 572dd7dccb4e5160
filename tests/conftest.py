"""Test bed: real servers on loopback (see tests/fixtures/)."""

pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.s3",
    "tests.fixtures.xrootd",
]
