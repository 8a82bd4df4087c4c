"""ARCHITECTURE.md is the map of the package: it names every module, and only modules that exist."""

import ast
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


def test_no_room_imports_another_rooms_private_names():
    # What a room offers the others has a name without an underscore; private names stay
    # in their room, so renaming one never breaks another room without a merge conflict.
    # _compat is the exception by design: it re-exports scikit-learn's private APIs.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            source = (node.module or "").rsplit(".", 1)[-1]
            # A sub-package (selection/, _persistence/) is one room: its modules share.
            in_room = node.level == 1 and path.parent != PACKAGE
            if source == "_compat" or in_room:
                continue
            for alias in node.names:
                name = alias.name
                submodule = (path.parent / f"{name}.py").exists() or (path.parent / name).is_dir()
                if name.startswith("_") and not name.startswith("__") and not submodule:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {name} from {node.module}")
    assert not offenders, offenders


def test_the_input_kinds_are_told_apart_only_in_the_inputs_room():
    # A new kind of input then needs _inputs.py only: no other room asks skorch (or
    # isinstance) what X is.
    kinds = {"is_dataset", "is_dict_input", "is_nd_input"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_inputs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and any(
                    alias.name in kinds for alias in node.names):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {node.module}")
    assert not offenders, offenders
