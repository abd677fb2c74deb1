"""Find labelled images in a folder, and the classes they belong to.

Your classes: one sub-folder per class (``train/hat/``, ``train/shoes/``, ...; photos at any depth below it).
The class names are the folder names, sorted; a photo's label is its class's place in that list.

The lesson's cat/dog layouts are read as they always were, and may be mixed:
- class sub-folders: ``cat/``, ``cats/``, ``dog/``, ``dogs/`` (any case, any depth);
- flat folders whose file names contain ``cat`` or ``dog`` (Kaggle's ``cat.123.jpg``).
There the classes are ``("dog", "cat")``: label 1 = cat, 0 = dog, as in the lesson. A file whose folder and
name say neither (or both) is *skipped and reported*, never silently labelled dog as the lesson's code did.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..classes import CATDOG_CLASSES, is_catdog
from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
CAT, DOG = 1, 0  # places in CATDOG_CLASSES
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
    classes: tuple[str, ...] = CATDOG_CLASSES  # names in label order


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


def _file(path: str, label: int, result: ScanResult) -> None:
    """Record ``path`` under ``label``, or as unreadable when it cannot be stat-ed or is not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        result.unreadable.append(path)
        return
    if not stat.S_ISREG(st.st_mode):
        result.unreadable.append(path)
        return
    result.files.append(ImageFile(path, label, st.st_size, st.st_mtime_ns))


def _scan_catdog(root: str) -> ScanResult:
    """The lesson's layouts: label by the nearest cat/dog folder, else by the file name."""
    result = ScanResult()
    for dirpath, names in _walk(root):
        relative = os.path.relpath(dirpath, root)
        from_folder = folder_label([] if relative == "." else relative.split(os.sep))
        for name in names:
            path = os.path.join(dirpath, name)
            label = from_folder if from_folder is not None else name_label(name)
            if label is None:
                result.unlabelled.append(path)
            else:
                _file(path, label, result)
    return result


def class_folders(root: str | os.PathLike) -> list[str]:
    """The names of ``root``'s sub-folders (hidden ones aside), sorted."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def check_class_names(names: Sequence[str], root: str | os.PathLike) -> tuple[str, ...]:
    """``names`` as a model's classes, or a :class:`DataError` naming the folder: at least two, each a printable,
    non-blank name, no two the same but for case."""
    if len(names) < 2:
        only = f"one class folder ({printable(names[0])}/)" if names else "no class folder"
        raise DataError(
            f"{root} holds {only}: a classifier needs photos of two or more classes, one sub-folder each "
            f"(e.g. {root}/hat/ and {root}/shoes/)."
        )
    seen: dict[str, str] = {}
    for name in names:
        if not name.strip() or not name.isprintable() or name != name.strip():
            raise DataError(
                f"{root}/{printable(name)}: not a usable class name (blank, control characters or spaces at its "
                "ends); rename the folder."
            )
        if name.casefold() in seen:
            raise DataError(
                f"{root}: class folders {seen[name.casefold()]}/ and {name}/ differ only in case; merge or rename one."
            )
        seen[name.casefold()] = name
    return tuple(names)


def scan_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> ScanResult:
    """Label every image file under ``root``; results sorted by path, so the order (and so the seeded split)
    never depends on the file system.

    ``classes`` None: found here. The lesson's layouts (flat, or every sub-folder a cat/dog one, or every photo
    labelled by a cat/dog folder or name) keep the lesson's classes; otherwise each sub-folder is a class.
    Given (a training folder's, or a model's): a ``test/`` folder is read with them, and a class folder that is
    not among them is a :class:`DataError`.
    """
    root = os.path.abspath(root)
    folders = class_folders(root)
    if classes is None or is_catdog(classes):
        lesson = _scan_catdog(root)
        aliases = all(name.lower() in _FOLDER_LABELS for name in folders)
        if classes is not None or not folders or aliases or not lesson.unlabelled:
            lesson.files.sort(key=lambda f: f.path)
            return lesson
        classes = check_class_names(folders, root)
    by_name = {name.casefold(): label for label, name in enumerate(classes)}
    result = ScanResult(classes=tuple(classes))
    for dirpath, names in _walk(root):
        relative = os.path.relpath(dirpath, root)
        top = None if relative == "." else relative.split(os.sep)[0]
        if top is not None and top.casefold() not in by_name:
            raise DataError(
                f"{os.path.join(root, top)}: a class folder the model does not know; its classes are "
                f"{', '.join(classes)}. Remove the folder, or train with it in train/."
            )
        for name in names:
            path = os.path.join(dirpath, name)
            if top is None:
                result.unlabelled.append(path)  # beside the class folders, in none of them
            else:
                _file(path, by_name[top.casefold()], result)
    result.files.sort(key=lambda f: f.path)
    return result


def scan_labelled_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> ScanResult:
    """:func:`scan_folder`, or a :class:`DataError` naming the folder when it holds no labelled image or (your
    classes) a class folder holds no image file."""
    result = scan_folder(root, classes)
    if not result.files:
        raise DataError(
            f"No labelled images in {root}: expected one sub-folder per class (cat/ and dog/ for the lesson), or "
            f"file names containing 'cat' or 'dog', with extensions .jpg .jpeg .png .bmp .webp."
        )
    if not is_catdog(result.classes) and classes is None:
        found = {f.label for f in result.files}
        empty = [name for label, name in enumerate(result.classes) if label not in found]
        if empty:
            raise DataError(
                f"{os.path.join(root, empty[0])} holds no photo (.jpg .jpeg .png .bmp .webp); add photos of "
                f"{printable(empty[0])} or remove the folder."
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
