"""The docs name only what exists: every linked or quoted path, `totesys-etl` command and `make`
target in README.md and readme_files/ is checked against the tree, the CLI's parser and the Makefile."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from totesys_etl.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "readme_files").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_QUOTED_PATH = re.compile(r"`((?:src|test|tf|\.ci|\.github|readme_files)/[A-Za-z0-9_./-]+)`")
#: A quoted file inside the package, named from its package folder (`ingest/run.py`).
_PACKAGE_FILE = re.compile(r"`((?:[a-z_]+/)+[a-z_0-9]+\.py)`")
_MODULE = re.compile(r"`(totesys_etl(?:\.[a-z_0-9]+)+)")
#: A bare file name quoted in a table's first column (a module table: `| `run.py` | ... |`).
_TABLE_FILE = re.compile(r"`([a-z_0-9]+\.py)`")
#: The folder a heading names for the tables under it: `totesys_etl.process` or `src/totesys_etl/ingest/cdc/`.
_HEADING_FOLDER = re.compile(r"`(?:totesys_etl\.([a-z_.]+)|(src/[a-z_/]+?))/?`")
_COMMAND = re.compile(r"totesys-etl ([a-z][a-z-]+)")
_MAKE = re.compile(r"`make ([a-z][a-z-]+)")
#: Words that follow "totesys-etl" in prose without being a command.
_NOT_COMMANDS = {"is", "and", "or", "the", "command", "commands"}


def _subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:  # argparse keeps its subparsers here
        if getattr(action, "choices", None) and isinstance(action.choices, dict):
            return set(action.choices)
    return set()


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.M))


def _doc_ids():
    return [str(d.relative_to(ROOT)) for d in DOCS]


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_link_and_quoted_path_exists(doc):
    text = doc.read_text()
    missing = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    for quoted in _QUOTED_PATH.findall(text):
        if not (ROOT / quoted.rstrip("/.")).exists():
            missing.append(quoted)
    for quoted in _PACKAGE_FILE.findall(text):
        if not any((base / quoted).exists() for base in (ROOT, ROOT / "src" / "totesys_etl", ROOT / "src")):
            missing.append(quoted)
    missing += [m for m in _MODULE.findall(text) if not _importable(m)]
    missing += [name for name, folder in _module_table_files(text) if not _table_file_exists(name, folder)]
    assert missing == []


def _module_table_files(text: str) -> list[tuple[str, Path | None]]:
    """Each bare file name in a table's first column, with the folder the nearest heading above it
    names (`## The processor (`totesys_etl.process`)`), or None when that heading names none."""
    found, folder = [], None
    for line in text.splitlines():
        if line.startswith("#"):
            named = _HEADING_FOLDER.search(line)
            folder = None if named is None else (
                ROOT / "src" / Path(*f"totesys_etl.{named[1]}".split(".")) if named[1] else ROOT / named[2])
        elif line.startswith("|") and line.count("|") > 2:
            found += [(name, folder) for name in _TABLE_FILE.findall(line.split("|")[1])]
    return found


def _table_file_exists(name: str, folder: Path | None) -> bool:
    """In the heading's folder when it names one; otherwise anywhere under src/ or test/."""
    if folder is not None:
        return (folder / name).is_file()
    return any(ROOT.glob(f"src/**/{name}")) or any(ROOT.glob(f"test/**/{name}"))


def _importable(dotted: str) -> bool:
    """A module, or an attribute of one (`totesys_etl.ingest.handler.lambda_handler`)."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_doc_ids())
def test_every_command_and_make_target_exists(doc):
    text = doc.read_text()
    commands, targets = _subcommands(), _make_targets()
    assert {"tick", "reconcile", "quarantine"} <= commands and {"demo", "run-checks"} <= targets
    unknown = {c for c in _COMMAND.findall(text) if c not in commands and c not in _NOT_COMMANDS}
    unknown |= {f"make {t}" for t in _MAKE.findall(text) if t not in targets}
    assert unknown == set()


def test_the_readme_first_screen_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_checks_would_catch_a_missing_path(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text("see [gone](nowhere.md) and `src/totesys_etl/nothing.py` and `make nothing`\n")
    with pytest.raises(AssertionError):
        test_every_link_and_quoted_path_exists(doc)
    with pytest.raises(AssertionError):
        test_every_command_and_make_target_exists(doc)


@pytest.mark.parametrize("table", [
    "## The processor (`totesys_etl.process`)\n| module | what |\n|---|---|\n| `dates.py` | dim_date rows |\n",
    # quarantine.py exists, but at the package's top, not in process/
    "## The processor (`totesys_etl.process`)\n| module | what |\n|---|---|\n| `quarantine.py` | bad input |\n",
    "## A run (`src/totesys_etl/ingest/cdc/`)\n| module | what |\n|---|---|\n| `run.py`, `gone.py` | x |\n",
    "## Shared\n| module | what |\n|---|---|\n| `nowhere_at_all.py` | x |\n",
])
def test_a_module_table_naming_a_file_that_is_not_there_fails(tmp_path, table):
    doc = tmp_path / "x.md"
    doc.write_text(table)
    with pytest.raises(AssertionError):
        test_every_link_and_quoted_path_exists(doc)
    doc.write_text(table.replace("dates.py", "run.py").replace("quarantine.py", "read.py")
                   .replace("`gone.py`", "`slot.py`").replace("nowhere_at_all.py", "lake.py"))
    test_every_link_and_quoted_path_exists(doc)  # the same tables naming files that exist pass


def test_every_contract_citation_names_a_section_of_the_contract():
    sections = set(re.findall(r"^## (§\d+)", (ROOT / "readme_files" / "contract.md").read_text(), flags=re.M))
    cited = set()
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("tf/**/*.tf"), *DOCS]:
        cited |= set(re.findall(r"contract (§\d+)", path.read_text(errors="replace")))
    assert cited and cited <= sections, cited - sections


def test_the_readme_commands_table_names_every_command():
    """Issue 35: the Commands table is complete (a new command needs its row)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Commands"):text.index("## Sources")]
    rows = set(re.findall(r"^\| `totesys-etl ([a-z]+)", table, flags=re.M))
    rows |= set(re.findall(r"^\| `totesys-etl [a-z]+` / `([a-z]+)`", table, flags=re.M))
    assert rows == _subcommands()


def test_operations_explains_every_column_of_reconcile_s_table():
    """Issue 35: reconcile's columns (history among them) were explained nowhere."""
    from totesys_etl.reconcile import Report

    header = Report([]).table().splitlines()[0]
    columns = re.split(r"\s{2,}", header.strip())
    text = (ROOT / "readme_files" / "operations.md").read_text()
    section = text[text.index("## Is the warehouse right?"):]
    assert len(columns) == 10 and all(f"| `{column}` |" in section for column in columns), columns
