"""The house's rules, read from the code: stages import only the stages below them, no module imports itself back
through others, no function grows past 80 lines, and the network's constructor stays small."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from medsa_monai.networks import MedSA

PACKAGE = Path(__file__).resolve().parents[1] / "medsa_monai"

# Bottom to top: a stage may import its own modules and those of the stages before it.
STAGES = ("data", "networks", "export", "prompts", "predictor", "conversion", "planning", "preprocessing",
          "evaluation", "training", "pretraining", "prediction", "bundle", "demo", "cli", "__main__")
GROUND = ("_deprecated", "__init__")  # the package's own helpers, below everything
FORMER_HOMES = ("inferers", "engines")  # names kept for old imports: they may import anything, nothing imports them


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``medsa_monai`` module that ``path`` imports, at module level or inside functions."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("medsa_monai"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` is a module
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("medsa_monai"))
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    return {t for t in found if t in modules and t != module}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_stages_import_only_the_stages_below_them():
    upward = []
    for module, targets in _graph().items():
        stage = _stage(module)
        for target in targets:
            other = _stage(target)
            if other in FORMER_HOMES and stage not in FORMER_HOMES:
                upward.append(f"{module} -> {target} (a former home; import from the new one)")
            elif stage in FORMER_HOMES or other in GROUND or other == stage:
                continue
            elif stage in GROUND or STAGES.index(other) > STAGES.index(stage):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up the stages:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back():
    graph = _graph()
    circles = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                on_path.add(nxt)
                visit(nxt, path + [nxt], on_path, done)
                on_path.discard(nxt)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done and not start.endswith("__init__"):
            visit(start, [start], {start}, done)
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").is_file()}
    # a package's __init__ imports its modules, which may import a sibling through the package: not a circle of code
    assert not [c for c in circles if not set(c.split(" -> ")) & packages], "\n".join(circles)


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1 + len(node.decorator_list)
                if lines > 80:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_the_network_constructor_takes_at_most_15_arguments():
    parameters = list(inspect.signature(MedSA.__init__).parameters)[1:]
    assert len(parameters) <= 15, parameters
    session = {"embedding_cache", "prompt_propagation", "propagation_automatic_weight", "confine_corrections",
               "removal_radius", "encode_depth", "click_guidance", "dense_prompts", "click_radius"}
    assert not session & set(parameters)  # an interactive session's settings belong to the predictor
