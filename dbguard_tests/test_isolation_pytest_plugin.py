"""The pytest plugin as a user's CI runs it: `pytest --dbguard-dsn URL` in a project of their own."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

DEMO_CASES = 15 * 4 + 1  # 15 tenant tables x 4 commands, and the view (select only)
DEMO_FAILS = 2 * 4 + 9 + 1  # garages and conversation_messages on every command, 9 USING (true) selects, the view


@pytest.fixture
def user_project(pytester):
    pytester.makepyfile(test_app="def test_their_own_code():\n    assert 1 + 1 == 2\n")
    return pytester


def test_without_the_option_the_plugin_adds_nothing(user_project, monkeypatch):
    monkeypatch.delenv("DBGUARD_ISOLATION_DSN", raising=False)
    result = user_project.runpytest("-q")
    result.assert_outcomes(passed=1)
    assert "test_isolation" not in result.stdout.str()


@pytest.mark.integration
def test_one_named_test_per_table_and_command_failing_with_the_witness(user_project, demo_dsn):
    result = user_project.runpytest("--dbguard-dsn", demo_dsn, "-rA", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1 + DEMO_CASES - DEMO_FAILS, failed=DEMO_FAILS)
    text = result.stdout.str()
    assert "FAILED dbguard-isolation::test_isolation[public.garages-select]" in text
    assert "PASSED dbguard-isolation::test_isolation[public.vision_metrics-delete]" in text
    result.stdout.fnmatch_lines(
        ["*as authenticated with tenant A, SELECT on public.vehicles returned * rows of tenant B*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.integration
def test_env_variable_and_keyword_selection_probe_only_what_is_selected(user_project, demo_dsn, monkeypatch):
    monkeypatch.setenv("DBGUARD_ISOLATION_DSN", demo_dsn)
    result = user_project.runpytest("-m", "dbguard_isolation", "-k", "vision_metrics or vision_accuracy", "-v")
    result.assert_outcomes(passed=8)
    assert result.ret == pytest.ExitCode.OK
    collected = user_project.runpytest("--collect-only", "-q", "-m", "dbguard_isolation")
    collected.stdout.fnmatch_lines(
        [
            "dbguard-isolation::test_isolation[public.vehicles-select]",
            "dbguard-isolation::test_isolation[public.vehicle_overview-select]",
        ]
    )
    assert "test_their_own_code" not in collected.stdout.str()


def test_unreachable_database_is_a_one_line_usage_error(user_project):
    result = user_project.runpytest("--dbguard-dsn", "postgresql://nobody:hunter2pw@127.0.0.1:1/nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: dbguard: cannot connect to nobody@127.0.0.1:1/nowhere*"])
    assert "hunter2pw" not in result.stdout.str() + result.stderr.str()
