"""YAML read with limits: a config file is data, and a hostile one must fail fast with one line.

PyYAML builds an alias (``*a``) as a reference to its anchor's object, so a "billion laughs" file loads in
microseconds; whatever walks or copies the result afterwards (a config merge, a parser's validation) then
visits every reference and never finishes. So the document's node graph is measured before any object is
built: its size as text, its nesting depth, and how many nodes it would hold with every alias expanded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 1 << 20  # a run's config.yaml is ~2 KB
MAX_DEPTH = 32
MAX_NODES = 100_000  # after expanding aliases


def _expanded_size(root: yaml.Node, source: str) -> int:
    """Nodes of the document with every alias expanded, counted without expanding them (shared nodes once)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels; a config file is a few levels deep.")
        if sizes.get(id(node)) == -1:
            raise ConfigError(f"{source}: an alias (*name) refers to a value that contains it; write it out instead.")
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = -1  # being counted: meeting it again below means it contains itself
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_NODES + 1)
        return sizes[id(node)]

    return size(root, 0)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text``, or a :class:`ConfigError` naming ``source``: too large, too deep, too many
    aliases, or not YAML (with the line)."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_BYTES // 1024} KB; a config file is a few KB.")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        if _expanded_size(root, source) > MAX_NODES:
            raise ConfigError(
                f"{source}: its aliases (*name) expand to more than {MAX_NODES:,} values (a 'billion laughs' "
                "file?); write the settings out instead."
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}.") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read.") from None


def read_yaml_file(path: str | os.PathLike) -> Any:
    """:func:`load_yaml` of a file; unreadable files are one line too."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KB; a config file is a few KB.")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8).") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    return load_yaml(text, str(path))
