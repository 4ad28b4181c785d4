"""Rule test cases as data: one YAML file per rule in cases/, run by dbguard_tests/test_rules_cases.py."""
