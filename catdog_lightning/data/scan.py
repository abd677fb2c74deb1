"""Find labelled images in a folder.

Two layouts are read, and may be mixed:
- class sub-folders: ``cat/``, ``cats/``, ``dog/``, ``dogs/`` (any case, any depth);
- flat folders whose file names contain ``cat`` or ``dog`` (Kaggle's ``cat.123.jpg``).

Label 1 = cat, 0 = dog, as in the lesson. A file whose folder and name say neither (or both)
is *skipped and reported*, never silently labelled dog as the lesson's code did.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
CAT, DOG = 1, 0
_FOLDER_LABELS = {"cat": CAT, "cats": CAT, "dog": DOG, "dogs": DOG}


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute
    label: int
    size: int  # bytes, part of the decode-cache key
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[ImageFile] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    # cannot even be stat-ed (broken link, loop), or not a regular file (a FIFO, socket or device: reading
    # one could block forever)
    unreadable: list[str] = field(default_factory=list)


def folder_label(folders: Sequence[str]) -> int | None:
    """Label from the nearest class folder (``cat``, ``cats``, ``dog``, ``dogs``, any case), if any."""
    for part in reversed(folders):
        label = _FOLDER_LABELS.get(part.lower())
        if label is not None:
            return label
    return None


def name_label(name: str) -> int | None:
    """Label from a file name containing ``cat`` or ``dog``; None when it has neither or both."""
    name = name.lower()
    has_cat, has_dog = "cat" in name, "dog" in name
    if has_cat == has_dog:
        return None
    return CAT if has_cat else DOG


def _walk(root: str) -> Iterator[tuple[str, list[str]]]:
    """``(dirpath, image file names)`` for every folder under ``root``: links followed, each real folder
    once (so a symlink loop ends), hidden files and folders and non-image extensions left out, sorted."""
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [n for n in filenames if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        yield dirpath, sorted(names)


def scan_folder(root: str | os.PathLike) -> ScanResult:
    """Label every image file under ``root``: by its nearest class folder, else by its file name.

    Results are sorted by path so the order (and so the seeded split) never depends on the file system.
    """
    root = os.path.abspath(root)
    result = ScanResult()
    for dirpath, names in _walk(root):
        relative = os.path.relpath(dirpath, root)
        from_folder = folder_label([] if relative == "." else relative.split(os.sep))
        for name in names:
            path = os.path.join(dirpath, name)
            label = from_folder if from_folder is not None else name_label(name)
            if label is None:
                result.unlabelled.append(path)
                continue
            try:
                st = os.stat(path)
            except OSError:
                result.unreadable.append(path)
                continue
            if not stat.S_ISREG(st.st_mode):
                result.unreadable.append(path)
                continue
            result.files.append(ImageFile(path, label, st.st_size, st.st_mtime_ns))
    result.files.sort(key=lambda f: f.path)
    return result


def scan_labelled_folder(root: str | os.PathLike) -> ScanResult:
    """:func:`scan_folder`, or a :class:`DataError` naming the folder when it holds no labelled image."""
    result = scan_folder(root)
    if not result.files:
        raise DataError(
            f"No labelled images in {root}: expected cat/ and dog/ sub-folders or file names "
            f"containing 'cat' or 'dog', with extensions .jpg .jpeg .png .bmp .webp."
        )
    return result


def printable(name: str) -> str:
    """A file name as one safe line of text: as it is when it is plain printable text, else escaped (a newline
    as \\n, a terminal escape as \\x1b, bytes that are not UTF-8 as \\xNN), so one name never becomes two
    lines, recolours a terminal, or fails to print."""
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:  # the OS's surrogate escapes of bytes that are not UTF-8
            pass
    raw = name.encode("utf-8", "surrogateescape")
    return raw.decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii").replace("\\\\x", "\\x")


def find_images(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Image files among ``paths``: files as given, folders searched recursively (as scan_folder does)."""
    found: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            found += sorted(os.path.join(d, n) for d, names in _walk(os.path.abspath(path)) for n in names)
        else:
            found.append(path)
    return found
