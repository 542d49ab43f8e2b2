"""`facegate` arguments: `--config` goes before or after the verb, for every command."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli.main import build_parser, main

Leaf = tuple[tuple[str, ...], argparse.ArgumentParser]  # the words of a command, its parser


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
    for action in subparsers:
        for name, command in action.choices.items():
            yield from leaf_commands(command, (*path, name))


@pytest.mark.parametrize("argv", [
    ["run", "--config", "site.toml", "--source", "clip.mp4"],
    ["run", "--source", "clip.mp4", "--config", "site.toml"],
    ["gallery", "list", "--config", "site.toml"],
    ["config", "check", "--config", "site.toml"],
    ["admin", "device", "list", "--config", "site.toml"],
    ["--config", "site.toml", "run", "--source", "clip.mp4"],
    ["--config", "site.toml", "gallery", "list"],
])
def test_config_goes_before_or_after_the_verb(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).config == Path("site.toml")


def test_config_after_the_verb_wins_and_none_means_the_default() -> None:
    parser = build_parser()
    both = ["--config", "a.toml", "gallery", "list", "--config", "b.toml"]
    assert parser.parse_args(both).config == Path("b.toml")
    assert parser.parse_args(["gallery", "list"]).config is None


def test_every_command_takes_config_after_the_verb() -> None:
    leaves = list(leaf_commands(build_parser()))
    assert len(leaves) > 20
    assert [path for path, command in leaves if "--config" not in command._option_string_actions] == []


def test_a_config_given_after_the_verb_is_the_one_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[embed]\nprecision = "int4"\n')
    assert main(["gallery", "list", "--config", str(bad)]) == 2
    assert "embed.precision: must be one of int8, fp32" in capsys.readouterr().err
