"""pytest plugin shipped with dbguard: ``pytest --dbguard-dsn URL`` collects tenant-isolation tests.

One test per tenant table and command, named like ``test_isolation[public.vehicles-select]``; a test fails
with the witness of every leak ("as authenticated with tenant A, SELECT on public.vehicles returned 8 rows of
tenant B"), is skipped (or fails with ``--dbguard-strict``) when a probe could not run, and passes when every
probe of that command held. The database is probed once, on the first test that runs, for the tables whose
tests were selected; everything happens in transactions that are rolled back (see ``dbguard test-isolation``).

Without ``--dbguard-dsn`` (or ``$DBGUARD_ISOLATION_DSN``) the plugin adds nothing and imports nothing heavy:
it is loaded by every pytest run through the ``pytest11`` entry point.
"""
from __future__ import annotations

import os

import pytest

ENV_DSN = "DBGUARD_ISOLATION_DSN"
MARKER = "dbguard_isolation"


def pytest_addoption(parser):
    group = parser.getgroup("dbguard")
    group.addoption("--dbguard-dsn", action="store", default=None, metavar="URL",
                    help=f"database whose tenant isolation to test (default: ${ENV_DSN})")
    group.addoption("--dbguard-config", action="store", default=None, metavar="FILE",
                    help="dbguard.yaml with the tenant model (default: $DBGUARD_CONFIG or ./dbguard.yaml)")
    group.addoption("--dbguard-strict", action="store_true", default=False,
                    help="fail (instead of skip) the isolation tests whose probes could not run")


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARKER}: tenant isolation test collected by dbguard from --dbguard-dsn")


def _dsn(config) -> str | None:
    return config.getoption("dbguard_dsn", default=None) or os.environ.get(ENV_DSN) or None


class IsolationLeak(AssertionError):
    """A probe leaked: the message is the witness."""


class IsolationSuite(pytest.Collector):
    """The collector the isolation tests hang from (it is not a file: the database is the test subject)."""

    def __init__(self, *, cases, **kwargs):
        super().__init__(**kwargs)
        self._cases = cases

    def collect(self):
        for qualified, command in self._cases:
            item = IsolationItem.from_parent(self, name=f"test_isolation[{qualified}-{command}]",
                                             qualified=qualified, command=command)
            item.add_marker(MARKER)
            yield item


class IsolationItem(pytest.Item):
    def __init__(self, *, qualified: str, command: str, **kwargs):
        super().__init__(**kwargs)
        self.qualified = qualified
        self.command = command

    def runtest(self) -> None:
        from dbguard_pipeline.probe import not_probed_reason, witnesses

        report = _report(self.session)
        verdict, results, not_probed = report.outcome(self.qualified, self.command)
        if verdict == "leak":
            raise IsolationLeak(witnesses([r for r in results if not r.isolated], escape=False))
        if verdict == "error":  # a statement PostgreSQL cannot evaluate (policy recursion): never isolated
            raise IsolationLeak(f"error: {not_probed_reason(not_probed)}")
        if verdict == "not probed":
            reason = not_probed_reason(not_probed)
            if self.config.getoption("dbguard_strict"):
                raise IsolationLeak(f"not probed: {reason}")
            pytest.skip(f"not probed: {reason}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (IsolationLeak, _ProbeFailed)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.name


class _ProbeFailed(Exception):
    pass


_REPORT = pytest.StashKey[object]()


def _report(session):
    """Probe once per session, for the tables of the selected isolation tests."""
    cached = session.stash.get(_REPORT, None)
    if cached is None:
        from dbguard_pipeline.config import load_config
        from dbguard_pipeline.errors import DbguardError
        from dbguard_pipeline.probe import probe

        config = session.config
        tables = list(dict.fromkeys(i.qualified for i in session.items if isinstance(i, IsolationItem)))
        try:
            cached = probe(_dsn(config), load_config(config.getoption("dbguard_config")), tables or None)
        except DbguardError as exc:
            cached = _ProbeFailed(f"dbguard: {exc}")
        session.stash[_REPORT] = cached
    if isinstance(cached, _ProbeFailed):
        raise cached
    return cached


@pytest.hookimpl(tryfirst=True)  # before -k / -m / --deselect filter the items
def pytest_collection_modifyitems(session, config, items):
    dsn = _dsn(config)
    if not dsn:
        return
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.probe import plan_targets

    try:
        cfg = load_config(config.getoption("dbguard_config"))
        snapshot = introspect(dsn, None, statement_timeout_ms=cfg.statement_timeout_ms,
                              lock_timeout_ms=cfg.lock_timeout_ms)
        targets = plan_targets(snapshot, cfg)
    except DbguardError as exc:
        raise pytest.UsageError(f"dbguard: {exc}") from None
    # the same (relation, command) cases, in the same order, as ProbeReport.cases() names them
    cases = [(t.qualified, command) for t in targets for command in t.commands]
    suite = IsolationSuite.from_parent(session, name="dbguard-isolation", nodeid="dbguard-isolation", cases=cases)
    # collected through the regular hooks, so that counts, --collect-only and the terminal summary see them
    rep = suite.ihook.pytest_make_collect_report(collector=suite)
    session.ihook.pytest_collectreport(report=rep)
    if rep.passed:
        items.extend(x for x in rep.result if isinstance(x, pytest.Item))
