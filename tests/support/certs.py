"""A private certificate authority made with the ``openssl`` command at test time.

``TestCA(directory)`` writes ``ca.pem`` (the CA certificate, what a client trusts) and
issues server certificates for 127.0.0.1 and localhost with :meth:`TestCA.issue`.
Keys are P-256 (quick to make). Tests that need it skip when ``openssl`` is missing.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import NamedTuple

__all__ = ["OPENSSL", "ServerCert", "TestCA"]

OPENSSL = shutil.which("openssl")
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
# What strict verifiers (Python 3.13's VERIFY_X509_STRICT, truststore) want to see.
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class ServerCert(NamedTuple):
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A server context serving this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


class TestCA:
    """A CA in *directory*; ``cert`` is its PEM certificate."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "proxpi-min test CA") -> None:
        if OPENSSL is None:
            raise RuntimeError("openssl is not installed")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert = self.directory / "ca.pem"
        self._key = self.directory / "ca.key"
        _openssl(
            "req", "-x509", *_KEY, "-keyout", self._key, "-out", self.cert, "-days", "2",
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )

    def issue(self, name: str = "server") -> ServerCert:
        """A server certificate for 127.0.0.1 and localhost, signed by this CA."""
        key = self.directory / f"{name}.key"
        request = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(_SERVER_EXTENSIONS)
        _openssl("req", "-new", *_KEY, "-keyout", key, "-out", request, "-subj", "/CN=localhost")
        _openssl(
            "x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self._key,
            "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", extensions,
        )
        return ServerCert(cert, key)


def _openssl(*args: object) -> None:
    result = subprocess.run(
        [OPENSSL, *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")
