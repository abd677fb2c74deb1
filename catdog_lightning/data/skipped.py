"""Files of a data folder that are not used, and how they are reported: counted, named, never dropped silently."""

from __future__ import annotations

import warnings

from ..classes import is_catdog
from ..errors import CatDogWarning
from .cache import DecodedImages
from .scan import ScanResult, printable

SHOW_FIRST = 5  # skipped files named in a warning; the rest are counted


class SkippedFilesWarning(CatDogWarning):
    """Some files in a data folder were not used (unlabelled or unreadable)."""


def _describe(paths: list[str], what: str, fix: str) -> str:
    more = f" and {len(paths) - SHOW_FIRST} more" if len(paths) > SHOW_FIRST else ""
    shown = ", ".join(map(printable, paths[:SHOW_FIRST])) + more
    return f"Skipped {len(paths)} {what}: {shown}. {fix}"


def skipped_files(scan: ScanResult, decoded: DecodedImages) -> list[tuple[str, str]]:
    """(path, reason) of every file of a folder that is not among its images."""
    unlabelled = "neither cat nor dog in its folder or name" if is_catdog(scan.classes) else "in no class folder"
    return (
        [(p, unlabelled) for p in scan.unlabelled]
        + [(p, "cannot be read") for p in scan.unreadable]
        + [(f.path, f.reason) for f in decoded.failures]
    )


def warn_skipped(scan: ScanResult, decoded: DecodedImages) -> None:
    if scan.unlabelled and is_catdog(scan.classes):
        what, fix = (
            "file(s) whose folder and name say neither cat nor dog",
            ("Put them in cat/ or dog/ folders, or name them cat.N.jpg / dog.N.jpg."),
        )
    else:
        what, fix = "file(s) outside the class folders", f"Move them into one of {', '.join(scan.classes)}."
    if scan.unlabelled:
        warnings.warn(
            _describe(scan.unlabelled, what, fix),
            SkippedFilesWarning,
            stacklevel=3,
        )
    unreadable = scan.unreadable + [f"{f.path} ({f.reason})" for f in decoded.failures]
    if unreadable:
        warnings.warn(
            _describe(unreadable, "unreadable image(s)", "The run goes on without them."),
            SkippedFilesWarning,
            stacklevel=3,
        )
