"""Serving the proxy from one process: its caches, its status and the HTTP server that
answers from them, built from the settings."""

from __future__ import annotations

import os
import socket
from typing import Optional

from ..core.settings import Settings
from ..infra.metrics import Metrics
from ..web.server import Server
from .application import Application
from .proxy import build_proxy, upstream_route
from .status import ProxyStatus

__all__ = ["ProxyServer"]


class ProxyServer(Server):
    """The proxy one process serves: its caches on the settings' cache dir (the command
    line makes a temp one when none is given), answering on the settings' address or on
    *listener*, a listening socket worker processes share (see
    :func:`.web.server.listening_socket`); a worker shares its numbers and invalidations
    with its siblings in *run_dir* (see :mod:`.infra.snapshots`, :mod:`.infra.invalidations`)."""

    def __init__(
        self, settings: Settings, listener: Optional[socket.socket] = None, run_dir: Optional[str] = None
    ) -> None:
        self.cache_dir = os.path.abspath(settings.cache_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        metrics = Metrics()
        proxy = build_proxy(settings, self.cache_dir, metrics, serving=True)
        # The parts stay in sight: the start-up line shows the policy, tests look inside.
        self.upstream, self.files, self.indexes, self.policy = proxy[:4]
        self.local = proxy.local
        self.prefetch = proxy.prefetch
        self.download_ahead = proxy.download_ahead
        status = ProxyStatus(settings, proxy, metrics, self.cache_dir, upstream_route(settings), run_dir)
        super().__init__(Application(settings, proxy, metrics, status, run_dir), settings, listener)
