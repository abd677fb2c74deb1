"""Which code a settings file, a run folder or a checkpoint may name: a class_path is data, and the module it
names must be Lightning's, this package's, or one allowed on the command line (``--allow_modules``), checked
before anything is imported."""

from __future__ import annotations

from .errors import ConfigError

# Modules whose classes a settings file, a run or a checkpoint may name; --allow_modules adds more.
TRUSTED_MODULES = ("lightning", "pytorch_lightning", "catdog_lightning")


def module_allowed(class_path: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether ``class_path`` lies in a trusted module or one named with --allow_modules (a bare class name
    means one of Lightning's own callbacks or loggers)."""
    module = class_path.rpartition(".")[0]
    return not module or any(module == m or module.startswith(f"{m}.") for m in (*TRUSTED_MODULES, *allowed))


def class_paths(settings: object, key: str = "") -> list[tuple[str, str]]:
    """``(key, class_path)`` of every object a settings tree would build (anything with a class_path)."""
    found = []
    if isinstance(settings, dict):
        if "class_path" in settings:
            found.append((key, str(settings["class_path"])))
        for name, value in settings.items():
            where = f"{key}.{name}" if key else str(name)
            if name == "net" and isinstance(value, str) and "." in value:  # --model.net mymodule.MyNet
                found.append((where, value))
            found += class_paths(value, where)
    elif isinstance(settings, list):
        for i, value in enumerate(settings):
            found += class_paths(value, f"{key}[{i}]")
    return found


def check_class_paths(settings: object, source: str, allowed: tuple[str, ...] = ()) -> None:
    """Refuse, before anything is imported, a settings file that names a class outside the allowed modules."""
    for key, path in class_paths(settings):
        if not module_allowed(path, allowed):
            module = path.rpartition(".")[0].split(".")[0]
            raise ConfigError(
                f"{source}: {key} names {path}, outside Lightning and catdog_lightning; nothing was imported or run. "
                f"If you trust that code, allow its module on the command line: --allow_modules {module}"
            )


def allowed_modules(flags: dict) -> tuple[str, ...]:
    """``--allow_modules`` of a command's parsed flags (one module or a list), as a tuple."""
    given = flags.get("allow_modules") or ()
    return (given,) if isinstance(given, str) else tuple(given)
