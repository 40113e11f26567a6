"""The one reader of ``mtasts.toml``: each package reads its own table from what this returns.

``[[domain]]`` belongs to :mod:`mtasts.deploy.config`, ``[resolver]`` to
:mod:`mtasts.resolver.config`; both raise :class:`ConfigError`, whose message
names the file, the table, the key and the rule broken.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from mtasts.errors import MtastsError


class ConfigError(MtastsError, ValueError):
    """The configuration is unusable; the message names the file, the table, the key and the rule."""


def read_toml(path: Path, *, missing_hint: str = "") -> dict[str, Any]:
    """The parsed file; every way it can be unreadable is one ``ConfigError`` line."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        hint = f"; {missing_hint}" if missing_hint else ""
        raise ConfigError(f"{path}: cannot read ({exc.strerror}){hint}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}), which TOML requires") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
