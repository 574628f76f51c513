"""Where an upstream request goes: a URL split for http.client, the outbound proxy it
is sent through (RFC 9112 3.2.2 absolute form, or a CONNECT tunnel), and what a failure
of that proxy is told as; without credentials in anything shown."""

from __future__ import annotations

import base64
import urllib.parse
from typing import NamedTuple, Optional

from ..core.urls import redact_url

__all__ = ["Endpoint", "Proxy", "basic_auth", "printable", "proxy_refusal", "via_proxy"]


def basic_auth(parts: urllib.parse.SplitResult) -> Optional[str]:
    """The ``Basic`` credentials (RFC 7617) of a URL's ``user:password@``, if any."""
    if parts.username is None:
        return None
    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class Endpoint(NamedTuple):
    """A URL split for http.client: (scheme, host, port), path and the basic-auth header."""

    key: tuple
    path: str
    authorization: Optional[str]

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        parts = urllib.parse.urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        key = (parts.scheme, parts.hostname or "", parts.port or default_port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(key, path, basic_auth(parts))

    @property
    def absolute(self) -> str:
        """The absolute form a proxy needs (RFC 9112 3.2.2), without credentials."""
        scheme, host, port = self.key
        netloc = f"[{host}]" if ":" in host else host
        if port != (443 if scheme == "https" else 80):
            netloc += f":{port}"
        return f"{scheme}://{netloc}{self.path}"


class Proxy(NamedTuple):
    """An outbound proxy: where to connect, the credentials to send, and its URL
    without them (the only form that reaches logs and error messages)."""

    host: str
    port: int
    authorization: Optional[str]
    shown: str

    @classmethod
    def parse(cls, url: str) -> "Proxy":
        parts = urllib.parse.urlsplit(url)
        return cls(parts.hostname or "", parts.port or 80, basic_auth(parts), redact_url(url))

    @property
    def headers(self) -> dict:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def proxy_refusal(exc: OSError) -> str:
    """What a proxy did, from the error of connecting through it."""
    text = str(exc.args[0]) if exc.args else ""
    # http.client's words when the proxy answers CONNECT with anything but 200.
    if text.startswith("Tunnel connection failed: "):  # the proxy's reason phrase: any bytes
        return "refused the tunnel: " + printable(text[len("Tunnel connection failed: "):][:200])
    return f"unreachable ({exc.strerror or type(exc).__name__})"


def printable(text: str) -> str:
    """*text* without what a header or a log line must not carry (controls, line breaks)."""
    return "".join(char for char in text if char.isprintable())


def via_proxy(key: tuple) -> str:
    return f" (via proxy {key[3].shown})" if key[3] else ""
