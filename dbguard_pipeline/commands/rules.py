"""dbguard rules: the audit's rules, with the severity the config gives them."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = (
    "List the audit's rules: id, severity (after the config's per-rule overrides), category, one-line title and "
    "the generate-migration action that fixes its findings. Rules the config excludes are marked."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="dbguard.yaml (default: $DBGUARD_CONFIG or ./dbguard.yaml)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def rule_rows(config) -> list[dict]:
    from dbguard_pipeline.audit import check_rule_ids
    from dbguard_pipeline.rules import REGISTRY, category_order

    check_rule_ids(config)
    rows = []
    for spec in sorted(REGISTRY.values(), key=lambda s: (category_order(s.category), s.id)):
        severity = config.severity.get(spec.id, spec.severity.value)
        rows.append(
            {
                "id": spec.id,
                "severity": severity,
                "default_severity": spec.severity.value,
                "category": spec.category,
                "title": spec.title,
                "fixable": spec.fix_action is not None,
                "fix_action": spec.fix_action,
                "excluded": spec.id in config.exclude_rules,
                "needs_data": spec.needs_metrics,
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    import sys

    from dbguard_pipeline.config import load_config

    rows = rule_rows(load_config(args.config))
    if args.format == "json":
        sys.stdout.write(json.dumps({"rules": rows}, indent=2) + "\n")
        return 0
    width = max(len(r["id"]) for r in rows)
    out = [f"{'RULE':<{width}}  {'SEVERITY':<9} {'CATEGORY':<12} {'FIX':<22} TITLE"]
    for r in rows:
        sev = r["severity"] + ("*" if r["severity"] != r["default_severity"] else "")
        fix = r["fix_action"] or "-"
        title = r["title"] + ("  (excluded)" if r["excluded"] else "")
        out.append(f"{r['id']:<{width}}  {sev:<9} {r['category']:<12} {fix:<22} {title}")
    overridden = sum(r["severity"] != r["default_severity"] for r in rows)
    excluded = sum(r["excluded"] for r in rows)
    out.append(
        f"\n{len(rows)} rules, {sum(r['fixable'] for r in rows)} fixable by generate-migration"
        + (f"; {overridden} severity overridden by the config (*)" if overridden else "")
        + (f"; {excluded} excluded by the config" if excluded else "")
    )
    sys.stdout.write("\n".join(out) + "\n")
    return 0
