"""Outbound HTTP proxies: which proxy a URL is reached through, from PROXPI_UPSTREAM_PROXY
or the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) read as curl and pip read them."""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
import urllib.request
from typing import Mapping, Optional

from .sources import Sources, bad_value
from .urls import redact_setting, redact_url

__all__ = ["ProxySettings", "proxy_settings"]


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """Outbound HTTP proxies: one URL per target scheme (``http``, ``https``, or ``all``
    as the fallback) and the ``NO_PROXY`` list, as urllib, pip and curl read them."""

    proxies: tuple[tuple[str, str], ...] = ()
    no_proxy: str = ""

    def proxy_for(self, scheme: str, host: str, port: int) -> Optional[str]:
        """The proxy URL to reach ``scheme://host:port`` through, or None for direct."""
        if not self.proxies:
            return None
        if _in_networks(host, self.no_proxy):
            return None
        if ":" in host:  # an IPv6 address, which urllib's matcher never finds: "::1", "[::1]", "[::1]:8443"
            address = host.strip("[]").lower()
            if any(_ipv6_entry_matches(entry, address, port) for entry in self.no_proxy.split(",")):
                return None
        # urllib's own matcher: host names, domain suffixes, "*", IP addresses and
        # host:port entries, compared without case.
        elif self.no_proxy and urllib.request.proxy_bypass_environment(f"{host}:{port}", {"no": self.no_proxy}):
            return None
        proxies = dict(self.proxies)
        return proxies.get(scheme) or proxies.get("all")

    def __repr__(self) -> str:  # credentials stay out of any repr of Settings
        return f"ProxySettings({self.describe()!r})"

    def describe(self) -> str:
        """For the start-up line; without credentials."""
        if not self.proxies:
            return "no outbound proxy"
        text = ", ".join(f"{scheme} via {redact_url(url)}" for scheme, url in self.proxies)
        return f"outbound proxy: {text}" + (f" (not for {self.no_proxy})" if self.no_proxy else "")


def _ipv6_entry_matches(entry: str, address: str, port: int) -> bool:
    """Whether a NO_PROXY *entry* (``*``, ``::1``, ``[::1]``, ``[::1]:8443``) names the
    IPv6 *address* (lower case, no brackets) on *port*."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        entry, _, rest = entry[1:].partition("]")
        if rest and rest != f":{port}":
            return False
    return entry in ("*", address)


def _in_networks(host: str, no_proxy: str) -> bool:
    """Whether *host*, an IP address, is in a network NO_PROXY names (``10.0.0.0/8``,
    ``::1/128``), as curl and pip read it; urllib reads no networks."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name
    for entry in no_proxy.split(","):
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry.strip().strip("[]"), strict=False):
                    return True
            except ValueError:  # not a network (or of the other IP version): another entry's kind
                continue
    return False


def _environment_proxies(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``urllib.request.getproxies_environment()`` over *env* instead of os.environ:
    scheme (``http``, ``no``, ...) -> (variable name, value). The lower-case spelling
    wins; an empty lower-case variable unsets the scheme; under CGI (REQUEST_METHOD
    set) an upper-case HTTP_PROXY is ignored, since a client's "Proxy:" header sets
    it (CVE-2016-1000110)."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        if value and name.lower().endswith("_proxy"):
            found[name.lower()[:-6]] = (name, value)
    if "REQUEST_METHOD" in env:
        found.pop("http", None)
    for name, value in env.items():
        if name.endswith("_proxy"):
            if value:
                found[name[:-6]] = (name, value)
            else:
                found.pop(name[:-6], None)
    return found


def _proxy_url(source: str, raw: str) -> str:
    # Like curl and pip, "host:port" means an HTTP proxy.
    url = raw.strip() if "://" in raw else "http://" + raw.strip()
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        raise bad_value(source, redact_setting(raw), "is not a proxy URL") from None
    if parts.scheme != "http":
        raise bad_value(source, redact_setting(raw), "is not an http:// proxy (the only kind supported)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise bad_value(source, redact_setting(raw), "has a bad port") from None
    if not parts.hostname:
        raise bad_value(source, redact_setting(raw), "names no proxy host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # "http://user:12/34@proxy" parses as host "user", port 12: its password would show.
        raise bad_value(source, redact_setting(raw), "has a path: percent-encode '/', '?' and '#' in its credentials")
    return url


def proxy_settings(sources: Sources, env: Mapping[str, str]) -> ProxySettings:
    """The override wins over HTTP(S)_PROXY/ALL_PROXY; NO_PROXY applies to both, as
    with pip's --proxy and curl's -x."""
    found = _environment_proxies(env)
    source, override = sources.get("--upstream-proxy", "PROXPI_UPSTREAM_PROXY")
    if override and override.strip().lower() == "none":
        return ProxySettings()
    if override:
        chosen = {"all": (source, override)}
    else:
        chosen = {scheme: found[scheme] for scheme in ("http", "https", "all") if scheme in found}
        if "http" in chosen and "https" in chosen:
            chosen.pop("all", None)  # never used, as curl never reads it then: not checked either
    proxies = tuple((scheme, _proxy_url(name, value)) for scheme, (name, value) in sorted(chosen.items()))
    return ProxySettings(proxies, found.get("no", ("", ""))[1] if proxies else "")
