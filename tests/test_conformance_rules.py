"""docs/numerics.md, the map of its rules to the kit's (qcore/testing/rules.py) and the kit's cases agree.

Each check fails on its own kind of drift: a rule tagged on the page but not
mapped (or mapped but no longer on the page), a kit rule that matches no case,
a case that no contract rule claims, a generated table edited by hand or not
regenerated, an accumulation without a tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qcore.kernels import ACCUMULATIONS
from qcore.testing import data, rules
from qcore.testing.runner import all_cases

PAGE = Path(__file__).resolve().parents[1] / "docs" / "numerics.md"


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def test_every_tagged_rule_of_the_page_is_mapped_and_every_mapped_rule_is_tagged(page: str) -> None:
    tagged = rules.page_tags(page)
    assert len(tagged) == len(set(tagged)), sorted(t for t in tagged if tagged.count(t) > 1)
    mapped = [r.id for r in rules.CONTRACT]
    assert len(mapped) == len(set(mapped))
    assert set(tagged) - set(mapped) == set(), "tagged in docs/numerics.md, missing from rules.CONTRACT"
    assert set(mapped) - set(tagged) == set(), "in rules.CONTRACT, not tagged in docs/numerics.md"


def test_every_kit_rule_named_runs_cases() -> None:
    cases = all_cases()
    empty = [(r.id, k) for r in rules.CONTRACT for k in r.kit if not rules.matching(k, cases)]
    assert not empty


def test_every_case_checks_some_contract_rule() -> None:
    kit = [k for r in rules.CONTRACT for k in r.kit]
    orphans = sorted({(c.op, c.rule) for c in all_cases() if not any(k.matches(c) for k in kit)})
    assert not orphans, "kit rules that check no rule of docs/numerics.md"


def test_the_page_carries_the_generated_table(page: str) -> None:
    assert rules.BEGIN in page and rules.END in page
    assert rules.generated_part(page) == rules.markdown_table(), \
        "docs/numerics.md is stale: run python -m qcore.testing.rules --write docs/numerics.md"


def test_rewrite_replaces_only_the_generated_part(page: str) -> None:
    stale = page.replace(rules.generated_part(page), "| stale |\n")
    assert rules.rewrite(stale) == page


def test_a_rule_is_checked_by_the_kit_or_names_its_other_test() -> None:
    with pytest.raises(ValueError, match="no kit rule checks it"):
        rules.ContractRule("orphan", "a rule nobody checks")


def test_every_accumulation_has_a_tolerance() -> None:
    assert set(data.tolerances().accumulation_rel) == set(ACCUMULATIONS)


def test_the_guide_lists_every_accumulation_with_its_bound() -> None:
    guide = (PAGE.parent / "plugins.md").read_text(encoding="utf-8")
    rel = data.tolerances().accumulation_rel
    for name in ACCUMULATIONS:
        row = next((line.strip() for line in guide.splitlines() if line.strip().startswith(f"| `{name}`")), None)
        assert row is not None, f"docs/plugins.md has no row for accumulation {name!r}"
        assert row.rstrip(" |").endswith(rules.power_of_two(rel[name])), row
