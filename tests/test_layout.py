"""The package's layers: each subpackage imports only from the layers below it.

files < images < model < training < coding < tools < cli (mscm_jax/__init__.py
re-exports the public API and may import any layer).
"""

import ast
import pathlib

import mscm_jax

PACKAGE = pathlib.Path(mscm_jax.__file__).parent
LAYERS = ("files", "images", "model", "training", "coding", "tools", "cli")


def _layer(module: str) -> str:
    """'mscm_jax.coding.codec' -> 'coding'; 'mscm_jax' (the package root) -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every mscm_jax module imported anywhere in a file, inside functions too."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mscm_jax"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mscm_jax"):
            # `from mscm_jax.coding import rans` imports the module mscm_jax.coding.rans.
            found.update(f"{node.module}.{a.name}" if node.module.count(".") == 1 else node.module
                         for a in node.names)  # fmt: skip
    return found


def layer_violations(package: pathlib.Path = PACKAGE) -> list[str]:
    violations = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        own = relative.parts[0].removesuffix(".py")
        if own not in LAYERS:  # the package root's __init__.py
            continue
        for module in _imported_modules(ast.parse(path.read_text())):
            target = _layer(module)
            if target and LAYERS.index(target) > LAYERS.index(own):
                violations.append(f"{relative} imports {module}")
    return violations


def test_each_layer_imports_only_the_layers_below_it():
    assert layer_violations() == []


def test_a_model_module_importing_the_coder_is_reported(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "context.py").write_text(
        "def f():\n    from mscm_jax.coding import rans\n    from mscm_jax.model.ops import quantize\n"
    )
    assert layer_violations(tmp_path) == ["model/context.py imports mscm_jax.coding.rans"]
