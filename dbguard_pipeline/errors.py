"""Errors a user can cause. Each carries a one-line message; the CLI maps them to exit code 2."""


class DbguardError(Exception):
    """Base class: a problem with input, configuration or the target database, not a bug."""

    exit_code = 2

    def __init__(self, message: str):
        # Always one line: users read it in a terminal or a CI log.
        super().__init__(" ".join(str(message).split()))


class ConfigError(DbguardError):
    pass


class UsageError(DbguardError):
    """The command line asks for something that cannot be meant (an empty --dsn, ...)."""


class ConnectionError_(DbguardError):
    """The database cannot be reached or refused us."""


class PermissionError_(DbguardError):
    """Connected, but not allowed to do what was asked."""


class NotFoundError(DbguardError):
    """A table, column or other object the user named does not exist."""


class MigrationError(DbguardError):
    pass
