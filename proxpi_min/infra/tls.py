"""TLS contexts: the trust used for upstream connections, the certificate we serve with.

Start-up checks the files the settings name (:func:`check_files`) by loading them
exactly as they will be used, and names the bad setting.
"""

from __future__ import annotations

import ssl
from typing import Optional

from ..core.errors import ConfigError
from ..core.settings import Settings

__all__ = ["check_files", "client_context", "describe_trust", "server_context"]


def client_context(ca_bundle: Optional[str] = None, verify: bool = True) -> ssl.SSLContext:
    """The context for upstream (and tunnelled) connections.

    With *ca_bundle*, only its CAs are trusted (``create_default_context`` then skips
    the system store); without it, the system store, where OpenSSL itself honours
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``.

    :raises OSError: the bundle cannot be read.
    :raises ssl.SSLError: the bundle holds no usable certificate.
    """
    context = ssl.create_default_context(cafile=ca_bundle)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The context for serving HTTPS: TLS 1.2 or newer (RFC 8996 retires 1.0 and 1.1).

    :raises OSError: a file cannot be read.
    :raises ssl.SSLError: the files are not a matching PEM certificate and key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An encrypted key would make OpenSSL prompt on the terminal; refuse it instead.
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def _no_password() -> bytes:
    raise ValueError("the TLS key is encrypted; give an unencrypted key")


def describe_trust(ca_bundle: Optional[str], verify: bool) -> str:
    """Which CAs upstream certificates are checked against, for the start-up line."""
    if not verify:
        return "upstream certificates not verified"
    if ca_bundle:
        return f"upstream CAs from {ca_bundle}"
    paths = ssl.get_default_verify_paths()
    # get_default_verify_paths() applies SSL_CERT_FILE / SSL_CERT_DIR; it reports a
    # path only when it exists.
    if paths.cafile and paths.cafile != paths.openssl_cafile:
        return f"upstream CAs from {paths.cafile} ({paths.openssl_cafile_env})"
    if paths.capath and paths.capath != paths.openssl_capath:
        return f"upstream CAs from {paths.capath} ({paths.openssl_capath_env})"
    return f"upstream CAs from the system store ({paths.cafile or paths.capath or 'none found'})"


def check_files(settings: Settings) -> None:
    """Load the CA bundle and the certificate pair *settings* name, as they will be used.

    :raises ConfigError: naming the flag or variable and its value.
    """
    if settings.ca_bundle:
        source = settings.source_of("ca_bundle")
        try:
            client_context(settings.ca_bundle)
        except ssl.SSLError:  # before OSError, its base class
            raise _bad(source, settings.ca_bundle, "holds no PEM certificate") from None
        except OSError as exc:
            raise _bad(source, settings.ca_bundle, f"cannot be read ({exc.strerror or exc})") from None
    if not (settings.tls_cert and settings.tls_key):
        return
    for field, path in (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise _bad(settings.source_of(field), path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        server_context(settings.tls_cert, settings.tls_key)
    except (OSError, ValueError) as exc:
        problem = f"and {settings.tls_key!r} are not a PEM certificate and its key ({exc})"
        raise _bad(settings.source_of("tls_cert"), settings.tls_cert, problem) from None


def _bad(source: str, path: str, problem: str) -> ConfigError:
    # The form of every settings error: the flag or variable, the value, what is wrong.
    return ConfigError(f"{source}={path!r} {problem}")
