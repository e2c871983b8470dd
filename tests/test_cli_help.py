"""Every subcommand and every option of `python -m harness` says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from harness.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def _missing_help(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            missing += [f"subcommand {name}" for name in action.choices if name not in helped]
            continue
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def test_the_walker_finds_every_subcommand() -> None:
    found = {path for path, _ in _parsers(build_parser(), "harness")}
    for command in ("bench", "clean", "collect", "history", "report", "readme", "compare", "env diff",
                    "env capture", "campaign"):
        assert f"harness {command}" in found, command


def test_every_option_and_subcommand_has_a_help_line() -> None:
    missing = {path: gaps for path, parser in _parsers(build_parser(), "harness") if (gaps := _missing_help(parser))}
    assert missing == {}


def test_the_walker_sees_a_missing_help_line() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bare = sub.add_parser("bare")
    bare.add_argument("--quiet", action="store_true")
    sub.add_parser("told", help="has one").add_argument("path", help="a path")
    walked = {path: _missing_help(child) for path, child in _parsers(parser, "x")}
    assert walked == {"x": ["subcommand bare"], "x bare": ["--quiet"], "x told": []}
