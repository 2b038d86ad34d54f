"""The direction of imports (readme_files/architecture.md), read from the source with `ast`.

Nothing is imported to check it, so an import inside a function (a lazy one) counts as much as one
at the top, and a module that would fail to import is still read. The rules:
- a stage (`ingest`, `process`, `load`) never imports another stage;
- Lambda code (the three stages and everything they import inside `totesys_etl`, transitively)
  never imports the local runtime, the bench or the command line: none of them is in the zip;
- the shared core never imports a stage, the local runtime, the bench or the command line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "totesys_etl"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
STAGES = ("ingest", "process", "load")
#: Parts that run only on a machine, never in a Lambda.
OFF_LAMBDA = ("local", "bench", "cli", "__main__")
#: What every stage may use: it may import nothing above it.
CORE = ("schema", "adapters", "lake", "manifest", "runs", "events", "calendar", "config", "errors", "logs",
        "faults", "quarantine", "failures", "landing_marks", "fanout",
        # read-only views of the lake's bookkeeping: they read it beside the stages, never through one
        "landed")


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every module `source` names in an import statement, anywhere in it (relative ones resolved).

    `from a import b` names `a` and `a.b` (b may be a module); the caller keeps the names it knows.
    """
    named = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            named.add(origin)
            named |= {f"{origin}.{alias.name}" for alias in node.names}
    return named


def module_graph(root: Path) -> dict[str, set[str]]:
    """`{module: modules of the same package it imports}` for every module file under `root`."""
    files = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for module, path in files.items():
        named = imports_of(path.read_text(), module, path.name == "__init__.py")
        graph[module] = {name for name in named if name in files}
    return graph


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to: `totesys_etl.load.run` -> `load`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _with_parents(module: str) -> list[str]:
    """Importing `a.b.c` runs `a` and `a.b` too."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def lambda_code(graph: dict[str, set[str]]) -> set[str]:
    """The stages and every module they import, transitively (parent packages included)."""
    seen: set[str] = set()
    todo = [m for m in graph if _part(m) in STAGES]
    while todo:
        module = todo.pop()
        for each in _with_parents(module):
            if each not in seen and each in graph:
                seen.add(each)
                todo.extend(graph[each])
    return seen


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            here, there = _part(module), _part(target)
            if here in STAGES and there in STAGES and here != there:
                found.append(f"stage imports another stage: {module} -> {target}")
            if here in CORE and there in (*STAGES, *OFF_LAMBDA):
                found.append(f"core imports {there}: {module} -> {target}")
    for module in sorted(lambda_code(graph)):
        for target in sorted(graph[module]):
            if _part(target) in OFF_LAMBDA:
                found.append(f"Lambda code imports {_part(target)}: {module} -> {target}")
    return found


def test_the_package_keeps_the_import_rules():
    graph = module_graph(SRC)
    assert violations(graph) == []
    # The rules check something: the core and the stages are where the rules say, and the walk
    # reaches through a stage into the core.
    assert {f"{PACKAGE}.{name}" for name in CORE} <= set(graph)
    assert {f"{PACKAGE}.{stage}.handler" for stage in STAGES} <= set(graph)
    assert {f"{PACKAGE}.lake", f"{PACKAGE}.schema", f"{PACKAGE}.adapters.postgres"} <= lambda_code(graph)
    assert not {m for m in lambda_code(graph) if _part(m) in OFF_LAMBDA}


@pytest.mark.parametrize("graph, expected", [
    ({"totesys_etl.load.run": {"totesys_etl.process.run"}, "totesys_etl.process.run": set()},
     ["stage imports another stage: totesys_etl.load.run -> totesys_etl.process.run"]),
    ({"totesys_etl.ingest.run": {"totesys_etl.helpers"}, "totesys_etl.helpers": {"totesys_etl.local.drive.tick"},
      "totesys_etl.local.drive.tick": set()},
     ["Lambda code imports local: totesys_etl.helpers -> totesys_etl.local.drive.tick"]),
    ({"totesys_etl.process.handler": {"totesys_etl.cli"}, "totesys_etl.cli": set()},
     ["Lambda code imports cli: totesys_etl.process.handler -> totesys_etl.cli"]),
    ({"totesys_etl.lake": {"totesys_etl.load.ledger"}, "totesys_etl.load.ledger": set()},
     ["core imports load: totesys_etl.lake -> totesys_etl.load.ledger"]),
    ({"totesys_etl.schema.ddl": {"totesys_etl.bench.run"}, "totesys_etl.bench.run": set()},
     ["core imports bench: totesys_etl.schema.ddl -> totesys_etl.bench.run"]),
    # The local runtime and the command line may import anything.
    ({"totesys_etl.local.drive.tick": {"totesys_etl.ingest.handler", "totesys_etl.load.handler"},
      "totesys_etl.cli": {"totesys_etl.local.drive.tick"}, "totesys_etl.ingest.handler": set(),
      "totesys_etl.load.handler": set()}, []),
])
def test_each_rule_fires_on_a_graph_that_breaks_it(graph, expected):
    assert violations(graph) == expected


def test_a_lazy_or_relative_import_in_a_file_is_caught(tmp_path):
    root = tmp_path / PACKAGE
    for folder in ("ingest", "process", "local"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "local" / "tick.py").write_text("")
    (root / "process" / "run.py").write_text("")
    (root / "ingest" / "run.py").write_text(
        "def handler(event):\n"
        "    from ..process import run\n"
        "    import totesys_etl.local.tick\n"
        "    return run, totesys_etl.local.tick\n")
    graph = module_graph(root)
    assert graph["totesys_etl.ingest.run"] == {"totesys_etl.process", "totesys_etl.process.run",
                                               "totesys_etl.local.tick"}
    assert violations(graph) == [
        "stage imports another stage: totesys_etl.ingest.run -> totesys_etl.process",
        "stage imports another stage: totesys_etl.ingest.run -> totesys_etl.process.run",
        "Lambda code imports local: totesys_etl.ingest.run -> totesys_etl.local.tick",
    ]
