"""mkdocs hooks: the README is the landing page, and the CLI reference comes from the argument parser.

``python docs/hooks.py`` rewrites ``docs/cli.md``; ``mkdocs build`` does the same before it reads
the pages, and tests/test_docs.py fails while the committed page differs from what the parser says.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "cli.md"
# A relative link target in Markdown: ](path) or ](path#anchor); not URLs, not in-page anchors.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def landing_page(readme: str, repo_url: str) -> str:
    """The README with its links made relative to docs/: pages under docs/ stay pages of the site,
    anything else (the license, the sources) points into the repository."""

    def relink(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.startswith("docs/"):
            return f"]({target.removeprefix('docs/')})"
        return f"]({repo_url.rstrip('/')}/blob/main/{target})"

    return RELATIVE_LINK.sub(relink, readme)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*")


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        params = dict(vars(action), prog=prog)
        if isinstance(params.get("choices"), (list, tuple)):
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return text


def _option(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        if action.metavar is not None:
            metavar = str(action.metavar)
        elif action.choices is not None:
            metavar = "{" + ",".join(map(str, action.choices)) + "}"
        else:
            metavar = action.dest.upper()
        if action.nargs in ("+", "*"):
            metavar = f"{metavar} [{metavar} ...]"
    return ", ".join(f"`{o} {metavar}`" if metavar else f"`{o}`" for o in action.option_strings)


def _table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | description |", "|---|---|"]
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        rows.append(f"| {_option(action)} | {_cell(_help(action, parser.prog))} |")
    return rows


def cli_reference() -> str:
    """The CLI reference page: every subcommand with its arguments, from `build_parser`."""
    from lottery_ticket.cli import COMMANDS, build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        "# Command line: `lottery-ticket`",
        "",
        "<!-- Generated from the argument parser by docs/hooks.py (`make docs`); do not edit. -->",
        "",
        f"{parser.description} A mistake in the command line or in a file it names is one line on",
        "stderr and exit status 2; a missing optional dependency names the extra to install",
        '(`pip install "lottery-ticket[demo]"`).',
        "",
        "```text",
        "lottery-ticket [--version] COMMAND [options]",
        "```",
        "",
        *_table(parser),
    ]
    for name in COMMANDS:
        sub = subcommands.choices[name]
        lines += ["", f"## `lottery-ticket {name}`", "", _cell(sub.description or ""), "", *_table(sub)]
    return "\n".join(lines) + "\n"


def write_cli_page() -> bool:
    """Rewrite docs/cli.md if the parser changed; True if it was rewritten."""
    text = cli_reference()
    if CLI_PAGE.exists() and CLI_PAGE.read_text(encoding="utf-8") == text:
        return False
    CLI_PAGE.write_text(text, encoding="utf-8")
    return True


def on_pre_build(config: Any) -> None:
    sys.path.insert(0, str(ROOT / "python"))  # the sources, not an installed copy
    try:
        write_cli_page()
    finally:
        sys.path.remove(str(ROOT / "python"))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == "index.md":
        return landing_page((ROOT / "README.md").read_text(encoding="utf-8"), config["repo_url"])
    return markdown


if __name__ == "__main__":
    print("docs/cli.md", "rewritten" if write_cli_page() else "is current")
