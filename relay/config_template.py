"""The commented config `trackrelay init` writes, rendered from the config dataclasses. No I/O.

The keys, their defaults and their comments live in relay/config.py only, so the file
init writes can neither miss a key nor disagree with the defaults.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Any, Callable

from relay.config import DURATION_KEYS, ENV_PREFIX, Config

HEADER = f"# trackrelay configuration. Every key can be overridden by {ENV_PREFIX}<SECTION>_<KEY>.\n"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def render(new_secret: Callable[[], str]) -> str:
    """Every section and key with its comment and default; fresh secrets from new_secret()."""
    defaults = Config()
    out = [HEADER]
    for section in fields(Config):
        if section.name == "source":
            continue
        out.append(f"\n[{section.name}]\n")
        values = getattr(defaults, section.name)
        for f in fields(values):
            out.append(f"# {f.metadata['doc']}\n")
            if f.metadata["fresh_secret"]:
                out.append(f"{f.name} = {json.dumps(new_secret())}\n")
                continue
            value = toml_value(getattr(values, f.name), (section.name, f.name) in DURATION_KEYS)
            # a default computed at start (the machine's name) is not pinned into the file
            commented = "# " if f.default_factory is not MISSING else ""
            out.append(f"{commented}{f.name} = {value}\n")
    return "".join(out)


def toml_value(value: Any, duration: bool = False) -> str:
    if duration:
        return json.dumps([duration_text(v) for v in value] if isinstance(value, tuple) else duration_text(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return json.dumps(str(value))


def duration_text(seconds: float) -> str:
    """60.0 -> "1m", 432000.0 -> "5d": the largest unit that divides it evenly."""
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
