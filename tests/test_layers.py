"""The package's folders are its layers (docs/architecture.md): a module imports only from layers below its own, and
the plain side never imports Lightning."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mnist_lite"

# Each top-level module or folder, and its layer: a module may import its own folder and any lower layer.
LAYERS = {
    "errors": 0,
    "network": 0,
    "boundaries": 1,
    "training": 2,
    "serving": 2,
    "commands": 3,
    "cli": 4,
    "__main__": 5,
}
PLAIN = ("errors", "network", "boundaries", "serving")  # run without Lightning: export, serve, runs, predict's reader


def _part(module: str) -> str:
    """The layer a dotted module belongs to: its first name under mnist_lite ('' for the package itself)."""
    return module.split(".")[1] if module.count(".") else ""


def _imports(source: Path | ast.AST) -> set[str]:
    """Every module a file imports, at the top, inside a function, or by name through ``import_module``."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text()) if isinstance(source, Path) else source):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def violations(src: Path) -> list[str]:
    """Each import that goes up or across the layers, or from the plain side into Lightning."""
    found = []
    for path in sorted(src.rglob("*.py")):
        own = path.relative_to(src).with_suffix("").parts[0]
        if own == "__init__":
            continue  # the package's own __init__: its version only
        for module in sorted(_imports(path)):
            target = _part(module) if module.startswith("mnist_lite.") else None
            if target in LAYERS and target != own and LAYERS[target] >= LAYERS[own]:
                found.append(f"{path.relative_to(src)} imports {module}")
            if own in PLAIN and module.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric"):
                found.append(f"{path.relative_to(src)} imports {module}")
    return found


def test_every_module_imports_only_from_its_own_layer_or_below() -> None:
    assert {p.stem if p.is_file() else p.name for p in SRC.iterdir() if not p.name.startswith(("_", "."))} - {
        "data"
    } <= set(LAYERS), "a new top-level module or folder needs its layer in LAYERS and in docs/architecture.md"
    assert violations(SRC) == []


def test_the_layer_check_finds_an_upward_import_and_lightning_on_the_plain_side(tmp_path: Path) -> None:
    for name, code in {
        "boundaries/images.py": "from mnist_lite.training import module\n",
        "serving/app.py": "def f():\n    import lightning.pytorch\n",
        "training/module.py": "from mnist_lite.serving import app\nfrom mnist_lite.boundaries import files\n",
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(code)
    assert violations(tmp_path) == [
        "boundaries/images.py imports mnist_lite.training",
        "boundaries/images.py imports mnist_lite.training.module",
        "serving/app.py imports lightning.pytorch",
        "training/module.py imports mnist_lite.serving",
        "training/module.py imports mnist_lite.serving.app",
    ]


def test_no_two_modules_import_each_other() -> None:
    modules = {
        ".".join(("mnist_lite", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }

    def edges(path: Path) -> set[str]:
        """The package's modules a file depends on; ``from package import module`` depends on that module alone."""
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                named = {f"{node.module}.{alias.name}" for alias in node.names}
                found |= named if named <= set(modules) else {node.module, *named}
            elif isinstance(node, ast.Import | ast.Call):
                found |= _imports(node)
        return found & set(modules)

    graph = {name: edges(path) - {name} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert sorted((a, b) for a in graph for b in graph[a] if reaches(b, a, {b})) == []
