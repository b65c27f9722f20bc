"""The package's import graph against its documented direction (docs/ARCHITECTURE.md):

    server -> engine -> {scheduler, kv_cache, runner, tokenization}
    runner -> {models, layers, sampling, spec_decode, execution, quant, weights}

Every module is parsed with `ast`; imports inside functions count as much as those at the
top (a function-level import only hides a cycle). Subpackages form no cycle, nothing lower
imports something higher, scheduler/ and kv_cache/ import no torch, and only cli.py (and
bench/ itself) reaches warpserve.bench.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import warpserve

PACKAGE_ROOT = Path(warpserve.__file__).parent

# What each layer may import from the package, besides the leaf modules (config,
# request, outputs) that everything shares.
ALLOWED = {
    "server": {"engine", "structured"},
    "engine": {
        "scheduler", "kv_cache", "runner", "tokenization",
        # engine/setup.py loads the model the runner is built around.
        "models", "layers", "weights", "quant", "sampling",
    },
    "runner": {
        "models", "layers", "sampling", "spec_decode", "execution", "quant", "weights",
        "scheduler",  # SchedulerOutput, the runner's input
    },
    "spec_decode": {
        "execution", "models", "layers", "sampling", "quant", "weights",
        "scheduler",  # DraftCandidate
    },
    "execution": {"models", "layers", "quant"},
    "models": {"layers", "weights"},
    "layers": set(),
    "scheduler": {"kv_cache", "structured"},
    "kv_cache": set(),
}  # fmt: skip
LEAVES = {"config", "request", "outputs"}
NO_TORCH = ("scheduler", "kv_cache")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    module = _module_name(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Absolute names of every module `path` imports, at any depth of the file (relative
    imports resolved against `package`, by default the one `path` is in)."""
    package = _package_of(path) if package is None else package
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def _string_targets(path: Path) -> set[str]:
    """Module names written as strings (importlib.import_module("warpserve.bench..."))."""
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("warpserve.")
    }


def _unit(module: str) -> str:
    """warpserve.runner.model_runner -> runner; warpserve.cli -> cli."""
    return module.split(".")[1] if "." in module else module


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _unit(_module_name(path))
        for name in _imports(path):
            if name.startswith("warpserve.") and _unit(name) != source:
                edges[source].add(_unit(name))
                where[(source, _unit(name))].add(str(path.relative_to(PACKAGE_ROOT)))
    return edges, where


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(edges) | {n for targets in edges.values() for n in targets}):
        if node not in index:
            visit(node)
    return found


def test_no_cycles_between_subpackages() -> None:
    edges, where = _graph()
    cycles = _cycles(edges)
    detail = [
        f"{a} -> {b}: {sorted(where[(a, b)])}"
        for cycle in cycles
        for a in cycle
        for b in cycle
        if b in edges.get(a, ())
    ]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)


def test_layers_import_only_what_is_documented() -> None:
    edges, where = _graph()
    wrong = [
        f"{source} -> {target} ({', '.join(sorted(where[(source, target)]))})"
        for source, allowed in ALLOWED.items()
        for target in sorted(edges.get(source, set()) - allowed - LEAVES)
    ]
    assert not wrong, "imports against the documented direction:\n" + "\n".join(wrong)


def test_scheduler_and_kv_cache_import_no_torch() -> None:
    offenders = [
        str(path.relative_to(PACKAGE_ROOT))
        for unit in NO_TORCH
        for path in sorted((PACKAGE_ROOT / unit).rglob("*.py"))
        if any(name == "torch" or name.startswith("torch.") for name in _imports(path))
    ]
    assert not offenders


def test_only_the_cli_reaches_bench() -> None:
    offenders = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] == "bench" or relative == Path("cli.py"):
            continue
        names = _imports(path) | _string_targets(path)
        if any(name == "warpserve.bench" or name.startswith("warpserve.bench.") for name in names):
            offenders.append(str(relative))
    assert not offenders


def test_the_checks_see_function_level_imports(tmp_path) -> None:
    """A test that cannot fail is a defect: an import inside a function is found."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from warpserve.runner import setup\n    import torch.nn\n")
    found = _imports(module, package="warpserve")
    assert {"warpserve.runner", "warpserve.runner.setup", "torch.nn"} <= found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []
