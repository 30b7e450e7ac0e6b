"""The suite's tiers as the Makefile selects them and CI runs them: every test, whatever marks it
carries, runs in exactly one of the tiers `.ci/run` calls (docs/develop/testing.md)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parents[1]
MARKS = ("spark", "slow", "stack")  # pyproject.toml's markers


def make_targets_run_by_ci() -> list[str]:
    return re.findall(r"^make (\S+)$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def marker_expression(target: str) -> str:
    """The ``-m`` expression of a Makefile target's pytest command."""
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    quoted, bare = re.search(r'(?:\$\(PYTEST\)|pytest) (?:.* )?-m (?:"([^"]+)"|(\S+))', recipe.group(1)).groups()
    return quoted or bare


def test_ci_runs_every_tier_and_each_test_lands_in_exactly_one():
    targets = make_targets_run_by_ci()
    assert targets == ["test", "test-slow", "test-stack"]  # the README's command first
    selections = {target: Expression.compile(marker_expression(target)) for target in targets}
    for count in range(len(MARKS) + 1):
        for marks in itertools.combinations(MARKS, count):
            tiers = [target for target, selects in selections.items() if selects.evaluate(marks.__contains__)]
            assert len(tiers) == 1, f"a test marked {marks or 'with nothing'} runs in {tiers or 'no tier'} in CI"


def test_the_fast_tier_is_the_part_of_make_test_that_starts_no_jvm():
    fast, test = Expression.compile(marker_expression("test-fast")), Expression.compile(marker_expression("test"))
    for count in range(len(MARKS) + 1):
        for marks in itertools.combinations(MARKS, count):
            carries = marks.__contains__
            assert fast.evaluate(carries) == (test.evaluate(carries) and "spark" not in marks)
