"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (a flag, a folder, a file) that they can fix; never a bug."""


class ConfigError(UserError, ValueError):
    """A flag or configuration value is invalid."""


class DataError(UserError):
    """A data folder is missing, empty or unusable."""


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C, SIGTERM); its progress is saved. Exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class CatDogWarning(UserWarning):
    """Something about the user's input worth reading (skipped photos, overlapping splits); the commands print
    it as one line in words (``warning: ...``), not in Python's warning format with a file and line."""
