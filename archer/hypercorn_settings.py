"""Hypercorn's settings for ``archer serve``: the packaged defaults, then the operator's file.

Layer: configuration (reads the packaged ``archer/data/hypercorn.toml`` with importlib.resources
and the file ``--hypercorn-config`` names; nothing else).

Rules: ``archer serve`` works from any working directory with no file of its own; a file given
with ``--hypercorn-config`` is read on top of the defaults (its keys win). A missing, unreadable
or malformed file, or a key hypercorn does not have, is a ``ConfigError`` naming the file and
the fix, never a traceback.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from typing import TYPE_CHECKING, Any, Final

from hypercorn.config import Config

from archer.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

#: Archer's defaults, inside the package.
DEFAULTS: Final = importlib.resources.files("archer") / "data" / "hypercorn.toml"


def load_hypercorn_settings(path: Path | None = None) -> dict[str, Any]:
    """The packaged defaults with ``path`` (a hypercorn TOML file) on top, checked.

    Raises:
        ConfigError: ``path`` is missing, unreadable, not TOML, or names a key hypercorn lacks.
    """
    merged = tomllib.loads(DEFAULTS.read_text(encoding="utf-8"))
    if path is None:
        return merged
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"--hypercorn-config {path}: no such file; give the path of a hypercorn TOML file,"
            " or leave the option out for Archer's defaults"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"--hypercorn-config {path}: cannot read it ({reason})") from None
    try:
        overrides = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--hypercorn-config {path}: not valid TOML ({exc}); fix it") from None
    known = {
        name
        for name in dir(Config)
        if not name.startswith("_") and not callable(getattr(Config, name))
    }
    unknown = sorted(key for key in overrides if key not in known)
    if unknown:
        raise ConfigError(
            f"--hypercorn-config {path}: hypercorn has no setting {', '.join(unknown)};"
            " check the spelling against hypercorn's configuration documentation"
        )
    merged.update(overrides)
    return merged
