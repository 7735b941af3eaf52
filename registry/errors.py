"""Errors the CLI turns into one clear line: exit code 1 for a mistake the user can fix in the command, 2 when the
database cannot be reached or refuses the work (so scripts can tell the two apart)."""


class RegistryError(Exception):
    """A failure the user can act on; its message is shown as is, without a traceback (exit code 1)."""


class DatabaseError(RegistryError):
    """The database failed or refused an operation, e.g. a read-only user's write (exit code 2)."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or started (exit code 2)."""
