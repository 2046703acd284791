"""Checks for constructor arguments and URL parameters: one range per kind of option.

Each check returns the value in its canonical type or raises ``ConfigError`` naming the option,
so a bad setting fails when the adapter is built, before any I/O.
"""

from __future__ import annotations

import math
import re
from typing import Final

from .errors import ConfigError

__all__ = ["MAX_AGE", "MAX_SECONDS", "file_mode", "flag", "idle_age", "parse_age", "positive_int", "seconds"]

#: The longest timeout or interval accepted (a day): longer waits are a mistake, not a setting.
MAX_SECONDS: Final = 86_400.0
#: The longest idle age accepted (pruning): a hundred years.
MAX_AGE: Final = 100 * 365 * 86_400.0


def flag(name: str, value: object) -> bool:
    """``value`` when it is exactly ``True`` or ``False``."""
    if type(value) is not bool:
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def positive_int(name: str, value: object, maximum: int | None = None) -> int:
    """``value`` when it is an ``int`` (not ``bool``) in ``1..maximum``."""
    if type(value) is not int or value <= 0 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be a positive int{bound}, got {value!r}")
    return value


def seconds(name: str, value: object, *, zero: bool = True, maximum: float = MAX_SECONDS) -> float:
    """``value`` as float seconds: an int or float, finite, ``>= 0`` (``> 0`` unless ``zero``)."""
    if type(value) not in (int, float):
        raise ConfigError(f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}")
    number = float(value)  # type: ignore[arg-type]
    low_ok = number >= 0 if zero else number > 0
    if not (math.isfinite(number) and low_ok and number <= maximum):
        low = ">= 0" if zero else "> 0"
        raise ConfigError(f"{name} must be {low} and at most {maximum:g} seconds, got {value!r}")
    return number


def file_mode(name: str, value: object) -> int:
    """Permission bits for a new file: ``0o600`` to ``0o777``, no setuid/setgid/sticky bits.

    The owner must be able to read and write the file, or the adapter could not open it.
    """
    if type(value) is not int or not 0 <= value <= 0o777 or value & 0o600 != 0o600:
        shown = oct(value) if type(value) is int else repr(value)
        raise ConfigError(
            f"{name} must be permission bits between 0o600 and 0o777 that let the owner read and "
            f"write (no setuid, setgid or sticky bit), got {shown}"
        )
    return value


def idle_age(name: str, value: object) -> float:
    """An idle age in seconds (pruning): above 0, at most ``MAX_AGE``."""
    return seconds(name, value, zero=False, maximum=MAX_AGE)


_AGE_UNITS: Final = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_age(text: str) -> float:
    """Seconds in an age such as ``7d``, ``12h``, ``1d12h``, ``90m``, ``30s``, ``2w`` or ``3600``.

    Raises:
        ConfigError: not an age, or not above zero.
    """
    spaced = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", spaced):
        total = float(spaced)
    else:
        parts = _AGE.findall(spaced)
        if not parts or "".join(number + unit for number, unit in parts) != spaced:
            raise ConfigError(
                f"{text!r} is not an age: give a number with a unit, e.g. 7d, 12h, 1d12h, 30m, 45s, 2w "
                "(w weeks, d days, h hours, m minutes, s seconds), or plain seconds"
            )
        total = sum(float(number) * _AGE_UNITS[unit] for number, unit in parts)
    if not math.isfinite(total) or total <= 0:
        raise ConfigError(f"the age {text!r} must be above zero")
    return total
