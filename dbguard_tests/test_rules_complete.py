"""Completeness of the rule units (as supabase/splinter's check_lints): every registered rule has its case file,
its documentation and a fix action the generator knows; every case file names a registered rule; docs/rules.md
is what the registry generates. No database needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguard_pipeline import rules
from dbguard_pipeline.fixes.plan import ACTIONS
from dbguard_pipeline.rules import docs

from .rules.support import CASES_DIR, case_files, load_file

REGISTRY = rules.all_rules()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
REGENERATE = "python -m dbguard_pipeline.rules.docs > docs/rules.md"


@pytest.mark.parametrize("rule_id", sorted(REGISTRY))
def test_every_rule_has_a_case_file_with_cases_and_negatives(rule_id):
    path = CASES_DIR / f"{rule_id}.yaml"
    assert path.exists(), f"{rule_id} has no case file: add {path.relative_to(CASES_DIR.parents[2])}"
    named, cases = load_file(path)
    assert named == rule_id
    assert any(c.expect for c in cases), f"{path.name}: no case where the rule reports something"
    assert any(c.negative for c in cases), f"{path.name}: no negative (a setup the rule must accept)"
    for c in cases:
        stray = {k for k in c.expect if not k.startswith(f"{rule_id}:")}
        assert not stray, f"{c.id} expects cache keys of other rules: {sorted(stray)}"
    if REGISTRY[rule_id].fix_action:
        assert any(c.fix for c in cases), f"{path.name}: the rule claims a fix action and no case applies it (fix: true)"
    else:
        assert not any(c.fix for c in cases), f"{path.name}: fix: true, but the rule has no fix action"


def test_every_case_file_names_a_registered_rule():
    unknown = sorted(p.name for p in case_files() if load_file(p)[0] not in REGISTRY)
    assert not unknown, f"case files for unknown rules: {unknown}"
    strays = sorted(p.name for p in CASES_DIR.iterdir() if p.suffix != ".yaml")
    assert not strays, f"files in {CASES_DIR.name}/ that are no case file: {strays}"


@pytest.mark.parametrize("rule_id", sorted(REGISTRY))
def test_every_rule_is_documented_and_its_fix_action_exists(rule_id):
    spec = REGISTRY[rule_id]
    assert spec.title and "\n" not in spec.title and not spec.title.endswith("."), rule_id
    assert spec.description, f"{spec.module} has no docstring: its first paragraph is the rule's description"
    assert len(spec.doc.split("\n\n")) > 1, f"{spec.module}: the docstring says what the rule checks and how to fix"
    assert "*How to fix.*" in spec.doc, f"{spec.module}: the docstring has no *How to fix.* paragraph"
    assert f"\n## {rule_id}\n" in DOCS.read_text(encoding="utf-8"), f"docs/rules.md has no section for {rule_id}"
    assert spec.fix_action is None or spec.fix_action in ACTIONS, (
        f"{rule_id} claims the fix action {spec.fix_action!r}; generate-migration knows {', '.join(ACTIONS)}")
    assert spec.func is not None


def test_docs_rules_md_is_generated_from_the_registry():
    assert DOCS.read_text(encoding="utf-8") == docs.render(), f"docs/rules.md is out of date: run {REGENERATE}"
