"""The one exception tree of proxpi-min; each class carries its HTTP status.

::

    ProxpiError                      500
    +-- FileCutShort                 500  (a file on disk shorter than the body sent from it)
    +-- BadRequest                   400
    +-- Unauthorized                 401
    |   +-- BasicUnauthorized        401  (uploads: a Basic challenge)
    +-- Forbidden                    403  (a guard rail refused it, here or at a proxpi-min index)
    +-- NotFound                     404
    +-- MethodNotAllowed             405  (carries the allowed methods)
    +-- NotAcceptable                406
    +-- RequestTooSlow               408  (an upload body below the minimum rate)
    +-- Conflict                     409  (an upload whose file name exists)
    +-- LengthRequired               411  (an upload without Content-Length)
    +-- PayloadTooLarge              413  (an upload past PROXPI_MAX_UPLOAD_SIZE)
    +-- RangeNotSatisfiable          416  (carries the file size)
    +-- UnknownMethod                501  (a method this server does not know)
    +-- Overloaded                   503  (the connection cap; carries Retry-After)
    +-- InsufficientStorage          507  (the cache dir cannot take an upload)
    +-- UpstreamError                502
        +-- UpstreamTimeout          504
        +-- IntegrityError           502  (hash or size mismatch)
        |   +-- HashMismatch         502  (whole bytes of another hash)
        +-- BadUpstreamPage          502  (an answer that does not parse)

    ConfigError(ValueError)               bad setting at start-up, exit status 2

The handler maps these to responses in one place; anything else is a bug (500).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "BadRequest",
    "BadUpstreamPage",
    "BasicUnauthorized",
    "ConfigError",
    "FileCutShort",
    "HashMismatch",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "IntegrityError",
    "LengthRequired",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ProxpiError",
    "RangeNotSatisfiable",
    "RequestTooSlow",
    "Unauthorized",
    "UnknownMethod",
    "UpstreamError",
    "UpstreamTimeout",
]


class ProxpiError(Exception):
    """An error that becomes an HTTP response with :attr:`status`."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileCutShort(ProxpiError):
    """A file on disk ended before the body sent from it (changed in place): the
    response, its headers out, is cut short."""

    def __init__(self, message: str, sent: int) -> None:
        super().__init__(message)
        self.sent = sent  # the bytes that went


class BadRequest(ProxpiError):
    status = 400


class Unauthorized(ProxpiError):
    status = 401
    challenge = 'Bearer realm="proxpi-min"'  # the WWW-Authenticate header (RFC 9110 11.6.1)


class BasicUnauthorized(Unauthorized):
    """No credentials for an upload: twine and uv answer a Basic challenge (RFC 7617)."""

    challenge = 'Basic realm="proxpi-min uploads"'


class Forbidden(ProxpiError):
    """A policy refuses the project or file; the message is the one-line reason, and
    *policy* the policy's name where the refusal tells it (``X-Proxpi-Policy``)."""

    status = 403

    def __init__(self, message: str, policy: Optional[str] = None) -> None:
        super().__init__(message)
        self.policy = policy


class NotFound(ProxpiError):
    status = 404


class MethodNotAllowed(ProxpiError):
    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class NotAcceptable(ProxpiError):
    status = 406


class RequestTooSlow(ProxpiError):
    """A request body that came too slowly (RFC 9110 15.5.9)."""

    status = 408


class Conflict(ProxpiError):
    status = 409


class LengthRequired(ProxpiError):
    """A body sent without a Content-Length where one is needed (RFC 9110 15.5.12)."""

    status = 411


class PayloadTooLarge(ProxpiError):
    status = 413


class RangeNotSatisfiable(ProxpiError):
    status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class UnknownMethod(ProxpiError):
    """A request method this server does not know (RFC 9110 15.6.2)."""

    status = 501


class InsufficientStorage(ProxpiError):
    """The cache dir cannot take what the request sends (RFC 4918 11.5)."""

    status = 507


class Overloaded(ProxpiError):
    """Too many connections at once; the client may retry after :attr:`retry_after` s."""

    status = 503
    retry_after = 1


class UpstreamError(ProxpiError):
    """The upstream index could not give a usable answer."""

    status = 502


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status (*upstream_status*)."""

    def __init__(self, message: str, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class AnswerCut(UpstreamError):
    """An answer that stopped before its end: the connection closed mid-body."""


class UpstreamUnreachable(UpstreamError):
    """No HTTP answer came: the connection was refused, reset or cut."""


class UpstreamTimeout(UpstreamUnreachable):
    status = 504


class AnswerTooSlow(UpstreamTimeout):
    """An answer that kept coming, too slowly for its deadline: this page's trouble, not
    (as a silence is) its index's."""


class IntegrityError(UpstreamError):
    """Downloaded bytes do not match the hash or size the index announced."""


class HashMismatch(IntegrityError):
    """Bytes that came whole (all the length announced) but not of the index's hash: the
    file is not the one listed, where a cut transfer would be worth asking again."""


class BadUpstreamPage(UpstreamError):
    """An upstream page that does not parse, or looks wrong (see index_cache)."""


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and its value."""
