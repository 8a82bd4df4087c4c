"""ARCHITECTURE.md is the map of the package: it names every module, and only modules that exist."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sksnapshot"
MAP = ROOT / "ARCHITECTURE.md"

# A module or package as the map's tables write it: `_base.py`, `sksnapshot/_split.py`,
# `_persistence/_fields.py`, `selection/`.
NAME = re.compile(r"`(?:sksnapshot/)?((?:[A-Za-z_]\w*/)*(?:[A-Za-z_]\w*\.py|[A-Za-z_]\w*/))`")
TEST_FILE = re.compile(r"`(test_\w+\.py)`")


def table_rows():
    return [line for line in MAP.read_text().splitlines() if line.startswith("|")]


def rooms_table():
    """The rows of the first table, the rooms (up to the first line that is not a row)."""
    lines = MAP.read_text().splitlines()
    start = lines.index("| room | what it holds | its tests |") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def named_in_tables():
    return {name for row in table_rows() for name in NAME.findall(row)}


def package_modules():
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}


def test_every_module_of_the_package_is_named_in_a_table():
    named = named_in_tables()
    packages = {name for name in named if name.endswith("/")}
    missing = sorted(
        module for module in package_modules()
        if module not in named
        # A sub-package's __init__ is named by the package's row (`selection/`).
        and not (module.endswith("/__init__.py") and module[:-len("__init__.py")] in packages)
    )
    assert not missing, f"ARCHITECTURE.md names no room for {missing}"


def test_every_module_a_table_names_exists():
    # Module names in the map's tables, as paths below sksnapshot/ (tests and benchmarks
    # are named as test_*.py or benchmarks/...: they are not package modules).
    stale = sorted(
        name for name in named_in_tables()
        if not name.startswith(("test_", "benchmarks/", "tests/"))
        and not (PACKAGE / name).exists()
    )
    assert not stale, f"ARCHITECTURE.md names modules that do not exist: {stale}"


def test_every_room_names_test_files_that_exist():
    rooms = rooms_table()
    assert len(rooms) >= 20
    for row in rooms:
        tests = TEST_FILE.findall(row.rsplit("|", 2)[1])
        assert tests, f"a room without a test file: {row[:60]}"
        for name in tests:
            assert (ROOT / "tests" / name).exists(), f"{name} (named for {row[:40]}) is missing"
