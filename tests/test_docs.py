"""The documentation site's generated parts are current and its API reference is complete.

``make docs`` builds the site in strict mode (a broken link or docstring fails it); these tests
cover what a build alone would not notice.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "lottery_ticket"
# Every module whose __all__ is public API, and its source.
PUBLIC_MODULES = {
    "lottery_ticket": PACKAGE / "__init__.py",
    "lottery_ticket.torch": PACKAGE / "torch" / "__init__.py",
    "lottery_ticket.lightning": PACKAGE / "lightning.py",
    "lottery_ticket.hf": PACKAGE / "hf.py",
}


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all(source: Path) -> list[str]:
    """A module's ``__all__``, read without importing it (lightning and transformers are slow)."""
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names = ast.literal_eval(node.value)
            assert isinstance(names, list)
            return names
    raise AssertionError(f"{source} has no __all__")


def test_the_cli_page_is_generated_from_the_current_parser() -> None:
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == _hooks().cli_reference(), "docs/cli.md is stale: run `make docs` (or python docs/hooks.py)"
    from lottery_ticket.cli import COMMANDS

    for command in COMMANDS:
        assert f"## `lottery-ticket {command}`" in page
    assert "`--sparsity SPARSITY`, `-s SPARSITY`" in page  # options with their metavars


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs" / "api").glob("*.md")))
    rendered = set(re.findall(r"^::: ([\w.]+)$", reference, flags=re.M))
    missing = []
    for module, source in PUBLIC_MODULES.items():
        names = _all(source)
        assert names, module
        for name in names:
            qualified = f"{module}.{name}"
            # Dunder values (the version) are described in prose; everything else is rendered.
            if (qualified not in reference) if name.startswith("__") else (qualified not in rendered):
                missing.append(qualified)
    assert missing == []
    assert rendered <= {f"{m}.{n}" for m, s in PUBLIC_MODULES.items() for n in _all(s)}  # no stale entries


def test_the_landing_page_is_the_readme_with_links_into_the_site() -> None:
    hooks = _hooks()
    readme = (
        "See [IMP](docs/guide/imp.md), ![plot](docs/demo.png), [license](LICENSE), [top](#install), [x](https://a.b/c)."
    )
    assert hooks.landing_page(readme, "https://example.org/repo/") == (
        "See [IMP](guide/imp.md), ![plot](demo.png), [license](https://example.org/repo/blob/main/LICENSE),"
        " [top](#install), [x](https://a.b/c)."
    )
    landing = hooks.landing_page((ROOT / "README.md").read_text(encoding="utf-8"), "https://example.org/repo")
    for target in re.findall(r"\]\((?!https?://|#)([^)\s#]+)", landing):
        assert (ROOT / "docs" / target).is_file(), target
