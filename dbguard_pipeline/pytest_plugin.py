"""pytest plugin shipped with dbguard: `pytest --dbguard-dsn URL` collects tenant-isolation tests.

(The collection of isolation tests is added with `dbguard test-isolation`; see docs.)
"""


def pytest_addoption(parser):
    group = parser.getgroup("dbguard")
    group.addoption("--dbguard-dsn", action="store", default=None, metavar="URL",
                    help="database whose tenant isolation to test (default: $DBGUARD_ISOLATION_DSN)")
