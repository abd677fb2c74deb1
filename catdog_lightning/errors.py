"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

import logging


class UserError(Exception):
    """A problem with the user's input (a flag, a folder, a file) that they can fix; never a bug."""


class ConfigError(UserError, ValueError):
    """A flag or configuration value is invalid."""


class DataError(UserError):
    """A data folder is missing, empty or unusable."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """An exception's message as a short single line for an error of ours (its type's name when it says nothing)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C, SIGTERM); its progress is saved. Exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class CatDogWarning(UserWarning):
    """Something about the user's input worth reading (skipped photos, overlapping splits); the commands print
    it as one line in words (``warning: ...``), not in Python's warning format with a file and line."""


class QuietOnceStopped(logging.Filter):
    """Drops a library's log records (those starting with ``message``; every one when it is empty) once
    ``stopped`` is set: what Optuna or LitServe log, with a traceback, as a run or a server is stopped on purpose,
    while the command says so in one line."""

    def __init__(self, message: str = ""):
        super().__init__()
        self.message, self.stopped = message, False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.stopped and record.getMessage().startswith(self.message))
