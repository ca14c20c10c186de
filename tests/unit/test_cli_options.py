"""flywheel's options: the stack options work before or after any command; all have help."""

from __future__ import annotations

import argparse

import pytest

from dataflywheel.cli import build_parser

COMMANDS = [
    ["status"],
    ["upload", "x.png"],
    ["predict", "x.png"],
    ["train", "--wait"],
    ["wait"],
    ["schedule", "StartTrainingFunction"],
    ["review", "export"],
    ["review", "import", "f.csv"],
    ["export", "-o", "out"],
    ["preflight"],
    ["up"],
    ["demo"],
]
STACK = ["--stack", "s1", "--region", "eu-west-1", "--profile", "p", "--data-dir", "d", "-v"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
@pytest.mark.parametrize("where", ["before", "after"])
def test_stack_options_go_before_or_after_the_command(command, where):
    argv = [*STACK, *command] if where == "before" else [*command, *STACK]
    args = build_parser().parse_args(argv)
    assert (args.stack, args.region, args.profile, args.data_dir, args.verbose) == (
        "s1",
        "eu-west-1",
        "p",
        "d",
        True,
    )


def test_an_option_given_before_is_not_reset_by_the_command():
    args = build_parser().parse_args(["--data-dir", "d", "status", "--json"])
    assert args.data_dir == "d" and args.stack is None and args.json


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_text():
    missing = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in _parsers(build_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
