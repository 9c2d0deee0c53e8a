"""The package layers point down (DESIGN §10), and no first-party import hides in a function.

Layers, lowest first: base (config, errors, levels, run directories, runtime) ← data ← models ←
distill, flops, evaluation ← viz ← report ← student training ← search ← ``envs`` ← ``policies``
← ``experiments`` ← ``scripts``. A module may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("rlpkd", "envs", "policies", "experiments")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "rlpkd",
            "rlpkd.atomic_files",
            "rlpkd.checkpoint_io",
            "rlpkd.config",
            "rlpkd.config_rules",
            "rlpkd.config_schema",
            "rlpkd.config_validation",
            "rlpkd.errors",
            "rlpkd.fingerprint",
            "rlpkd.levels",
            "rlpkd.registry",
            "rlpkd.rundir",
            "rlpkd.runtime",
        ),
    ),
    ("data", ("rlpkd.data",)),
    ("models", ("rlpkd.models",)),
    ("distill, flops, evaluation", ("rlpkd.distill", "rlpkd.flops", "rlpkd.evaluation")),
    ("viz", ("rlpkd.viz",)),
    ("report", ("rlpkd.report",)),
    ("student training", ("rlpkd.training",)),
    ("search", ("rlpkd.search",)),
    ("envs", ("envs",)),
    ("policies", ("policies",)),
    ("experiments", ("experiments",)),
)


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of the longest prefix that names ``module`` (KeyError if none)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise KeyError(module)
    return best[0]


def module_name(path: Path) -> str:
    """Dotted module name of a first-party source file."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def first_party_imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every first-party import of ``tree``."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
            for name in names:
                if name.split(".")[0] in FIRST_PARTY:
                    found.append((name, child.lineno, in_function))
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_function or function)

    visit(tree, False)
    return found


def source_files() -> list[Path]:
    """Every Python file of the first-party packages."""
    return sorted(path for package in FIRST_PARTY for path in (ROOT / package).rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for path in source_files():
        try:
            layer_of(module_name(path))
        except KeyError:
            unplaced.append(module_name(path))
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_a_layer_above_it() -> None:
    upward = []
    for path in source_files():
        module = module_name(path)
        for imported, line, _ in first_party_imports(ast.parse(path.read_text())):
            if layer_of(imported) > layer_of(module):
                upward.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} "
                    f"({LAYERS[layer_of(module)][0]}) imports {imported} "
                    f"({LAYERS[layer_of(imported)][0]})"
                )
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_first_party_import_hides_in_a_function() -> None:
    hidden = [
        f"{path.relative_to(ROOT)}:{line}: {imported}"
        for path in source_files()
        for imported, line, in_function in first_party_imports(ast.parse(path.read_text()))
        if in_function
    ]
    assert not hidden, "function-local first-party imports:\n" + "\n".join(hidden)


def test_no_package_imports_the_scripts() -> None:
    for path in source_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "scripts", path


@pytest.mark.parametrize(
    ("source", "imported", "upward"),
    [
        ("rlpkd.models.detector", "rlpkd.training.kd_step", True),
        ("rlpkd.training.kd_step", "envs.observation", True),
        ("envs.rewards.value", "policies.weights", True),
        ("policies.ppo_setup", "experiments.rl_pipeline", True),
        ("rlpkd.viz.heatmaps", "rlpkd.report.decision_log", True),
        ("experiments.tune.sweep", "rlpkd.data.build", False),
        ("rlpkd.search.fitness", "rlpkd.training.kd_step", False),
    ],
)
def test_the_layer_check_itself(source: str, imported: str, upward: bool) -> None:
    assert (layer_of(imported) > layer_of(source)) is upward
