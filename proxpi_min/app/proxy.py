"""The composition root: the upstream connections and caches a settings value asks for,
built alike for ``serve`` and ``warm``."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import NamedTuple, Optional

from ..core.policy import Policy
from ..core.settings import IndexSettings, Settings
from ..files.download_ahead import DownloadAhead
from ..files.file_cache import FileCache
from ..files.layout import files_root, index_root, local_root
from ..files.local import LocalIndex
from ..files.metadata import WheelMetadata
from ..index.catalog import LOCAL_ORIGIN, Catalog
from ..index.index_cache import IndexCache
from ..index.page_budget import SavedPagesBudget, pages_budget
from ..index.page_store import PageStore
from ..index.prefetch import Prefetcher
from ..index.upstream import Upstream
from ..infra.background import Background
from ..infra.metrics import Metrics
from ..infra.atomic import remove_temp_files
from ..infra.tls import describe_trust

__all__ = ["Proxy", "build_proxy", "upstream_route"]

logger = logging.getLogger(__name__)


class Proxy(NamedTuple):
    """The parts that answer for the proxy, built by :func:`build_proxy`."""

    upstream: Upstream
    files: FileCache
    indexes: Catalog
    policy: Policy
    metadata: WheelMetadata  # PEP 658 metadata of wheels listed without
    local: Optional[LocalIndex] = None  # uploads, --local-dir, a server's watched folder (None: none)
    prefetch: Optional[Prefetcher] = None  # serving only, never offline
    download_ahead: Optional[DownloadAhead] = None  # with the prefetcher


def uploads_on(settings: Settings) -> bool:
    """Whether the proxy takes uploads (a token is set)."""
    return bool(settings.upload_token or settings.upload_tokens_file)


def _local_index(settings: Settings, cache_dir: str, serving: bool) -> Optional[LocalIndex]:
    """The local index: uploads (kept in the cache dir, served even once uploads are
    off; a server without them watches for the folder, which another proxy on the cache
    dir makes on its first upload) and the --local-dir folder."""
    root = local_root(cache_dir)
    dirs = (settings.local_dir,) if settings.local_dir else ()
    if uploads_on(settings) or os.path.isdir(root):
        remove_temp_files(root)
        local = LocalIndex(root, dirs)
        removed = local.remove_orphans() if serving else 0
        if removed:
            logger.info("removed %d metadata and info files of uploads that did not finish", removed)
        return local
    if serving:
        return LocalIndex(root, dirs, watch=True)
    return LocalIndex(None, dirs) if dirs else None


def _local_policy(settings: Settings) -> Policy:
    """The guard rails of local files: deny and allow as for any file; the cooldown
    only with PROXPI_MIN_AGE_LOCAL (an upload is one's own, not a stranger's)."""
    local = dataclasses.replace(
        settings, pins=(), index_strategy="merge", min_age=settings.min_age if settings.min_age_local else 0.0
    )
    return Policy.from_settings(local, [LOCAL_ORIGIN])


def build_proxy(settings: Settings, cache_dir: str, metrics: Optional[Metrics] = None, serving: bool = False) -> Proxy:
    """The upstream connections and the caches on *cache_dir*, as *settings* say: the
    server's (*serving*: with the prefetcher), and the ``warm`` command's (so both store
    files and pages alike)."""
    metrics = metrics or Metrics()
    remove_temp_files(index_root(cache_dir))
    if not settings.verify_ssl:  # said where a WARNING level log shows it, not only in the start line
        logger.warning("index certificates are not verified (PROXPI_DISABLE_INDEX_SSL_VERIFICATION): anyone on "
                       "the way can answer for the index, its pages and so the hashes files are checked against")
    upstream = Upstream(
        settings.connect_timeout,
        settings.read_timeout,
        settings.verify_ssl,
        [index.url for index in settings.indexes],
        ca_bundle=settings.ca_bundle,
        proxies=settings.upstream_proxy,
    )
    files = FileCache(
        files_root(cache_dir), settings.cache_size, upstream, settings.offline, metrics, settings.download_min_rate
    )
    # ``warm`` keeps every page it reads, for an offline proxy: only a server online prunes.
    pruning = serving and not settings.offline
    budget = SavedPagesBudget(index_root(cache_dir), pages_budget(settings.cache_size)) if pruning else None
    stores = [(index, PageStore(cache_dir, index.url, budget)) for index in settings.indexes]
    if settings.offline:
        # A copied cache dir is served whatever index URLs filled it: pages saved for
        # other indices come after the configured ones.
        known = {store.directory for _, store in stores}
        stores += [
            (IndexSettings(url, 0.0), store)
            for url, store in PageStore.saved_indexes(cache_dir)
            if store.directory not in known
        ]
    # Guard rails over every index the proxy asks (offline: the saved ones too).
    policy = Policy.from_settings(settings, [index.url for index, _ in stores])
    # Pages are saved and compressed after their answer (Catalog.close finishes them).
    background = Background()
    local = _local_index(settings, cache_dir, serving)
    # Stored after the answer when serving; `warm` stores each before it reports it.
    metadata = WheelMetadata(
        files, settings.metadata == "auto", settings.offline, metrics, background if serving else None
    )
    if serving and metadata.enabled:
        metadata.learn_stored_later()
    indexes = Catalog(
        [
            # An extra index's refusal of a project it lacks is no failure of the merged page.
            IndexCache(
                index, upstream, store, settings.offline, metrics=metrics, background=background,
                refusal_is_absence=position > 0,
            )
            for position, (index, store) in enumerate(stores)
        ],
        settings.page_memory,
        offline=settings.offline,
        is_cached=files.has,
        cache_generation=lambda: files.generation,
        metrics=metrics,
        policy=policy,
        background=background,
        local=local,
        local_merge=settings.local_merge,
        local_policy=_local_policy(settings),
        metadata=metadata if metadata.enabled else None,
    )
    prefetch = ahead = None
    if serving and settings.prefetch != "off" and not settings.offline:
        prefetch = Prefetcher(indexes, settings.prefetch_jobs, metrics, metadata if settings.prefetch == "metadata" else None)
        metadata.on_served = prefetch.metadata_served
        ahead = DownloadAhead(files, settings.prefetch_jobs, metrics)
    return Proxy(upstream, files, indexes, policy, metadata, local, prefetch, ahead)


def upstream_route(settings: Settings) -> str:
    """How upstreams are reached, for the start-up line and the home page."""
    return f"{describe_trust(settings.ca_bundle, settings.verify_ssl)}; {settings.upstream_proxy.describe()}"
