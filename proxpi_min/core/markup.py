"""HTML escaping for the pages we write (attribute values and text alike)."""

from __future__ import annotations

import html

__all__ = ["escape"]


def escape(value: object) -> str:
    """*value* as text that is safe inside HTML text and quoted attribute values."""
    return html.escape(str(value), quote=True)
