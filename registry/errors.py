"""Errors the CLI turns into one clear line and exit code 2."""


class RegistryError(Exception):
    """A failure the user can act on; its message is shown as is, without a traceback."""


class DatabaseUnavailable(RegistryError):
    """The database cannot be reached or started."""
