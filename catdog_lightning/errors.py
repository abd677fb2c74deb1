"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (a flag, a folder, a file) that they can fix; never a bug."""


class ConfigError(UserError, ValueError):
    """A flag or configuration value is invalid."""


class DataError(UserError):
    """A data folder is missing, empty or unusable."""
