"""One setting's value read from the flags or the environment, checked, and named in any error."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .errors import ConfigError
from .units import parse_decimal, parse_duration, parse_size

__all__ = ["Sources", "bad_value"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
# Every value flag() takes: a refusal names them all.
_FLAG_VALUES = f"{', '.join(_TRUE)} (on) or {', '.join(_FALSE[:-1])}, empty (off), in any case"


class Sources:
    """Looks a setting up in the flags first, then the environment; names the source."""

    def __init__(self, env: Mapping[str, str], flags: Mapping[str, Any]) -> None:
        self._env = env
        self._flags = flags

    def get(self, flag: str, var: str) -> tuple[str, Any]:
        value = self._flags.get(flag.lstrip("-").replace("-", "_"))
        if value is not None:
            return flag, value
        return var, self._env.get(var)

    def number(
        self, flag: str, var: str, default: float, *, positive: bool = False, maximum: Optional[float] = None
    ) -> float:
        source, raw = self.get(flag, var)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise bad_value(source, raw, "is not a number") from None
        if value < 0 or (positive and value == 0) or value != value or value == float("inf"):
            raise bad_value(source, raw, "must be a positive number" if positive else "must be >= 0")
        if maximum is not None and value > maximum:
            raise bad_value(source, raw, f"must be at most {maximum:g}")
        return value

    def size(self, flag: str, var: str, default: int) -> int:
        source, raw = self.get(flag, var)
        if raw is None or raw == "":
            return default
        try:
            return parse_size(str(raw))
        except ValueError:
            raise bad_value(source, raw, "is not a size (bytes, or a number with K, M, G or T)") from None

    def flag(self, flag: str, var: str) -> bool:
        source, raw = self.get(flag, var)
        if raw is None or isinstance(raw, bool):
            return bool(raw)
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise bad_value(source, raw, f"must be {_FLAG_VALUES}")

    def text(self, flag: str, var: str) -> Optional[str]:
        return self.get(flag, var)[1] or None

    def duration(self, flag: str, var: str) -> float:
        source, raw = self.get(flag, var)
        if raw is None or raw == "":
            return 0.0
        try:
            return parse_duration(str(raw))
        except ValueError:
            raise bad_value(source, raw, "is not a duration (seconds, or a number with s, m, h, d or w)") from None

    def integer(
        self, flag: str, var: str, default: int, problem: str, *, minimum: int = 0, maximum: Optional[int] = None
    ) -> int:
        """A whole number written in ASCII digits, from *minimum* to *maximum*."""
        source, raw = self.get(flag, var)
        if raw is None or raw == "":
            return default
        text = str(raw).strip()
        value = parse_decimal(text)
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise bad_value(source, raw, problem)
        return value

    def choice(self, flag: str, var: str, choices: Sequence[str]) -> str:
        source, raw = self.get(flag, var)
        if raw is None or raw == "":
            return choices[0]
        if raw.strip().lower() not in choices:
            raise bad_value(source, raw, f"must be one of: {', '.join(choices)}")
        return raw.strip().lower()

    def items(self, flag: str, var: str, *, split_flag: bool = False) -> tuple[str, list[str]]:
        """A repeatable flag, or a comma-separated variable: (source, stripped items).
        *split_flag*: each flag value is a comma-separated list too (project patterns,
        which never hold a comma; an index URL, alone or in a pin, may)."""
        source, raw = self.get(flag, var)
        if raw is None:
            return source, []
        if isinstance(raw, str):
            raw = [raw]
        elif not split_flag:
            return source, [item.strip() for item in raw if item.strip()]
        return source, [item.strip() for value in raw for item in value.split(",") if item.strip()]


def bad_value(source: str, raw: Any, problem: str) -> ConfigError:
    return ConfigError(f"{source}={raw!r} {problem}")
