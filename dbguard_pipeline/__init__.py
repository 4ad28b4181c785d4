"""dbguard: audits, proves and fixes tenant isolation in multi-tenant PostgreSQL."""

__version__ = "0.1.0"

# The project's home; every rule's helpUri (SARIF) and the CLI's help link to its section of docs/rules.md (a
# "## rule_id" heading, whose anchor is the rule id). Here, not in report/, so the CLI's help imports no report.
INFORMATION_URI = "https://github.com/dbguard/dbguard"
RULES_DOC_URL = f"{INFORMATION_URI}/blob/main/docs/rules.md"
