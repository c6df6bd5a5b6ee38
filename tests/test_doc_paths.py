"""Comments, docstrings, the README and the docs name only paths that exist.

A path here is anything starting with ``rust/``, ``python/``, ``tests/`` or ``benches/`` (relative to
the repository root); globs and placeholders (``tests/*.py``, ``rust/<name>.rs``) are not checked.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Not preceded by a path or word character, so URLs and absolute paths are left alone.
PATH = re.compile(r"(?<![\w./-])((?:rust|python|tests|benches)/[\w./*<>{}-]*)")
SOURCE_DIRS = ("python", "rust", "tests", "benches")


def _python_prose(text: str) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring of a Python module."""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield first.lineno, first.value.value


def _rust_prose(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if "//" in line:
            yield number, line[line.index("//") :]


def _whole(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(text.splitlines(), 1)


def _hash_comments(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if "#" in line:
            yield number, line[line.index("#") :]


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".py", ".pyi"):
        return _python_prose(text)
    if path.suffix == ".rs":
        return _rust_prose(text)
    if path.suffix == ".md":
        return _whole(text)
    return _hash_comments(text)


def stale_paths(root: Path, files: list[Path]) -> list[str]:
    """``file:line: path`` for every path named in ``files``' prose that does not exist under ``root``."""
    stale = []
    for file in files:
        for line, prose in _prose(file):
            for match in PATH.finditer(prose):
                named = match.group(1).rstrip(".,:;")
                if any(c in named for c in "*<>{}"):
                    continue
                if not (root / named).exists():
                    stale.append(f"{file.relative_to(root)}:{line + prose[: match.start()].count(chr(10))}: {named}")
    return stale


def _project_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "Cargo.toml"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    for folder in SOURCE_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".pyi", ".rs"))
    return [f for f in files if f.is_file() and "__pycache__" not in f.parts]


def test_every_named_path_exists() -> None:
    files = _project_files()
    assert len(files) > 50  # the scan sees the sources, not an empty tree
    assert stale_paths(ROOT, files) == []


def test_a_stale_path_is_reported_where_it_is_named(tmp_path: Path) -> None:
    # The made-up paths are assembled here so that this file itself names none of them.
    r, t, b = "rust", "tests", "benches"
    (tmp_path / "rust").mkdir()
    (tmp_path / "rust" / "lib.rs").write_text(f'// see {r}/lib.rs and {r}/gone.rs\nlet s = "{r}/in_code.rs";\n')
    module = tmp_path / "m.py"
    module.write_text(
        f'"""Module doc.\n\nNames {t}/missing.py."""\n'
        f"x = '{t}/not_prose.py'  # but {b}/absent.py is a comment\n"
        "def f():\n    '''python/nowhere/ and tests/*.py (a glob)'''\n"
    )
    page = tmp_path / "page.md"
    page.write_text(f"See [the kernels](https://example.org/{r}/x.rs), `{r}/lib.rs`, `{r}/old.rs`.\n")
    assert sorted(stale_paths(tmp_path, [tmp_path / "rust" / "lib.rs", module, page])) == [
        f"m.py:3: {t}/missing.py",
        f"m.py:4: {b}/absent.py",
        "m.py:6: python/nowhere/",
        f"page.md:1: {r}/old.rs",
        f"rust/lib.rs:1: {r}/gone.rs",
    ]
