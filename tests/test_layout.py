"""The package's shape: no import cycles, small modules, light value types, one rank entry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpc_curator"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def internal_imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (function bodies included).

    ``from hpc_curator import x`` counts as importing ``hpc_curator.x`` when that is a
    module, else the package itself; ``TYPE_CHECKING`` blocks are skipped (never executed).
    """
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def skip(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        )

    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if skip(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in files}
    edges = {module_name(p): internal_imports(p, known) for p in files}
    for deps in edges.values():
        # the top-level __init__ only re-exports the public API and is always imported first
        deps.discard("hpc_curator")
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_in_the_package() -> None:
    edges = graph()
    assert edges.get("hpc_curator.engine.attempt")
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("folder", ["hpc_curator", "benchmarks"])
def test_no_module_over_500_lines(folder: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_value_types_import_nothing_heavy() -> None:
    code = (
        "import sys; import hpc_curator.engine.values; "
        "heavy = [m for m in ('numpy', 'mpi4py', 'h5py', 'pyarrow', 'hpc_curator.engine.rank') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_launcher_goes_through_one_rank_entry() -> None:
    """Only the attempt module calls run_world; the launchers call its entry points."""
    callers = {
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "run_world(" in p.read_text() and p.name != "attempt.py"
    }
    assert callers == set(), callers
    for launcher, entry in (
        ("cli/run.py", "run_rank("),
        ("engine/rankprog.py", "rank_main("),
        ("slurm/submit.py", "rank_main("),
        ("backends/sequential.py", "run_here("),
        ("backends/pool.py", "run_slots("),
        ("engine/slots.py", "begin("),
        ("cli/submit.py", "run_here("),
    ):
        assert entry in (PACKAGE / launcher).read_text(), launcher


#: names of the run directory's own files and folders: only ``rundir.py`` joins them to a path
RUN_DIR_NAMES = {
    "run.json", "attempts", "journal", "shards", "outputs", "logs", "invalidations",
    "revisions", "claims", "manifest-spill", "slurm", "manifest.json", "manifest.parquet",
    "report.html", "plan.pkl", "chunks.npy", "finisher", "groups.npy", "indices.npy",
}  # fmt: skip


def test_run_dir_paths_are_spelled_only_in_rundir() -> None:
    """``something / "journal"`` outside rundir.py: a path of the run dir spelled twice."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "rundir.py" and path.parent == PACKAGE / "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant)
                and node.right.value in RUN_DIR_NAMES
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} / {node.right.value!r}")
    assert not found, found


def test_every_module_is_in_the_architecture_page_and_readme_links_resolve() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        p.relative_to(PACKAGE).as_posix()
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.name != "__main__.py" and f"`{p.relative_to(PACKAGE).as_posix()}`" not in page
    ]
    assert not missing, f"add these modules to docs/architecture.md: {missing}"
    import re

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links and all((ROOT / link).exists() for link in links), links
