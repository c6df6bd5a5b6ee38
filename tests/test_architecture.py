"""The package's seams: what imports what, the framework registries, the CLI's dependency check."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lottery_ticket as lt
from lottery_ticket import adapters, backends
from lottery_ticket.backends import Bits
from lottery_ticket.cli import main

PACKAGE = Path(lt.__file__).parent
HEAVY = ("torch", "matplotlib", "sklearn", "lightning", "transformers")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_import_and_help_import_no_framework() -> None:
    assert _imported_after("import lottery_ticket") == []
    help_run = "from lottery_ticket.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _imported_after(help_run) == []
    for command in ("demo", "bench", "inspect"):
        assert _imported_after(help_run.replace("'--help'", f"'{command}', '--help'")) == [], command


def test_a_tensor_loads_the_torch_adapter_through_its_entry_point() -> None:
    code = (
        "import sys, torch, lottery_ticket as lt\n"
        "assert 'lottery_ticket.torch' not in sys.modules\n"
        "m = lt.global_magnitude_masks([torch.tensor([3.0, -1.0, 2.0])], 1)\n"
        "assert m[0].tolist() == [True, False, True], m\n"
        "assert 'lottery_ticket.torch' in sys.modules\n"
        # DTensors are recognised without importing their module (sympy & co: seconds).
        "assert 'torch.distributed.tensor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """Package modules imported by ``name`` (relative imports resolved; TYPE_CHECKING blocks skipped)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:  # type-only imports (under `if TYPE_CHECKING:`) are skipped with their block
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        nodes.append(node)
        if not top_level_only:
            pending.extend(ast.iter_child_nodes(node))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}")
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("lottery_ticket")}


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(name, path, top_level_only=False) if m in modules and m != name}
        for name, path in modules.items()
    }
    # Function-level (lazy) imports count too. A package importing its own submodules is no cycle.
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt) :] + [node, nxt])}")
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_library_never_imports_tools_or_names_a_framework() -> None:
    for name, path in _modules().items():
        if name.startswith("lottery_ticket.cli") or name == "lottery_ticket.__main__":  # the command's entry
            continue
        imported = _imports(name, path, top_level_only=False)
        assert not any(m.startswith("lottery_ticket.cli") for m in imported), f"{name} imports the CLI"
        generic = not name.startswith(("lottery_ticket.torch", "lottery_ticket.lightning", "lottery_ticket.hf"))
        if generic:
            assert not any(m.startswith("lottery_ticket.torch") for m in imported), f"{name} names the torch adapter"
            assert "sys.modules" not in path.read_text(), f"{name} sniffs sys.modules"


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


# The only modules that may import a framework: its adapter, the trainer callbacks and the tools.
FRAMEWORK_HOMES = ("lottery_ticket.torch", "lottery_ticket.lightning", "lottery_ticket.hf", "lottery_ticket.cli")
FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "transformers", "accelerate")
IMPORTERS = ("import_module", "__import__", "find_spec")


def _framework_imports(path: Path) -> list[str]:
    """Frameworks imported anywhere in ``path``: top level, in functions, under TYPE_CHECKING, by name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in IMPORTERS and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{n} (line {getattr(node, 'lineno', '?')})" for n in names if n.split(".")[0] in FRAMEWORKS]
    return found


def test_only_the_adapters_and_tools_import_a_framework() -> None:
    offenders = {
        name: found
        for name, path in _modules().items()
        if not name.startswith(FRAMEWORK_HOMES) and (found := _framework_imports(path))
    }
    assert offenders == {}
    assert _framework_imports(PACKAGE / "hf.py")  # the scan sees the imports a home does make


def _private_imports(name: str, path: Path, modules: set[str]) -> list[str]:
    """``from .x import _name`` of a private name defined in another module (importing a private
    *module*, ``from . import _files``, is fine)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        if not base.startswith("lottery_ticket") or base == name:
            continue
        for alias in node.names:
            private = alias.name.startswith("_") and not alias.name.startswith("__")
            if private and f"{base}.{alias.name}" not in modules:
                found.append(f"{base}.{alias.name}")
    return found


def _module_names() -> set[str]:
    stubs = {f"lottery_ticket.{p.stem}" for p in PACKAGE.glob("*.pyi")}  # the compiled extension
    return set(_modules()) | stubs


def test_no_private_name_is_imported_from_another_module() -> None:
    modules = _module_names()
    found = {name: sorted(hits) for name, path in _modules().items() if (hits := _private_imports(name, path, modules))}
    assert found == {}


def test_the_private_import_check_tells_names_from_modules(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from . import _files, _core\n"
        "from ._files import write_atomic\n"
        "from .ticket import _RESERVED, Ticket\n"
        "def f():\n    from .kernels import _quoted\n"
        "from .m import _own\n"
    )
    modules = {"lottery_ticket._files", "lottery_ticket._core", "lottery_ticket.ticket", "lottery_ticket.kernels"}
    found = _private_imports("lottery_ticket.m", source, modules)
    assert found == ["lottery_ticket.ticket._RESERVED", "lottery_ticket.kernels._quoted"]


def test_the_package_top_level_stays_small() -> None:
    """At most 14 Python modules directly in ``python/lottery_ticket/`` (``__init__`` and
    ``__main__`` included); everything else lives in a package named after its concept."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert 5 < len(top) <= 14, top


class Boxed:
    """A stand-in framework's array: a wrapper around a NumPy array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape


class BoxedBackend:
    name = "boxed"

    def owns(self, x: object) -> bool:
        return isinstance(x, Boxed)

    def float_bits(self, x: Any, label: str, *, writable: bool) -> Bits:
        return Bits(label, x.array.view(np.uint32), "float32", x.shape)

    def mask_array(self, x: Any, label: str) -> np.ndarray:
        result: np.ndarray = x.array
        return result

    def from_numpy(self, array: np.ndarray) -> Any:
        return Boxed(array)

    def from_bits(self, array: np.ndarray, dtype: str) -> Any:
        return Boxed(array.view(dtype))

    def storage_address(self, x: Any) -> int:
        return int(x.array.__array_interface__["data"][0])

    def to_saved(self, x: Any, label: str) -> tuple[np.ndarray, str]:
        return x.array.copy(), "float32"

    def from_saved(self, array: np.ndarray, dtype: str) -> Any:
        return Boxed(array.copy())


@pytest.fixture
def boxed_backend() -> Any:
    backend = BoxedBackend()
    backends.register_array_backend(backend)
    yield backend
    del backends._BACKENDS["boxed"]


def test_a_registered_array_backend_is_used_by_the_kernels(boxed_backend: BoxedBackend) -> None:
    w = Boxed(np.array([0.5, -3.0, 0.25, 2.0], dtype=np.float32))
    masks = lt.global_magnitude_masks([w], 2)
    assert isinstance(masks[0], Boxed) and masks[0].array.tolist() == [False, True, False, True]
    lt.apply_masks([w], masks)
    assert w.array.tolist() == [0.0, -3.0, 0.0, 2.0]
    float_masks, products = lt.kernels.mask_products([w], masks)  # float results come back boxed too
    assert isinstance(float_masks[0], Boxed) and float_masks[0].array.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert isinstance(products[0], Boxed) and products[0].array.dtype == np.float32
    assert backends.backend_named("boxed") is boxed_backend


def test_a_registered_model_adapter_is_found_and_unknown_models_are_refused() -> None:
    class Model:
        pass

    class Adapter(adapters.NumpyDictAdapter):
        def __init__(self, model: Model, include: Any, exclude: Any, names: Any) -> None:
            super().__init__({"w": np.arange(1.0, 5.0)}, include, exclude, names)

    with pytest.raises(TypeError, match="model: expected"):
        adapters.adapter_for(Model())
    adapters.register_model_adapter(lambda m: isinstance(m, Model), Adapter)
    try:
        ticket = lt.LotteryTicketPruner(0.5, 1).find_ticket(Model())
        assert ticket.masks["w"].tolist() == [False, False, True, True]
    finally:
        adapters._ADAPTERS.pop()
    with pytest.raises(ValueError, match="framework 'nope'"):
        backends.backend_named("nope")


def test_cli_reports_a_missing_optional_dependency_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_matplotlib(name: str, *args: Any) -> Any:
        return None if name == "matplotlib" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and 'pip install "lottery-ticket[demo]"' in err and "Traceback" not in err
    assert not out.exists()
