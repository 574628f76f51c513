"""The proxy as the routes see it (:class:`.web.routes.App`): pages, files, the home
page, the metrics text and invalidation, answered from one :class:`.Proxy`."""

from __future__ import annotations

import functools
import json
from typing import Optional

from ..core.byteranges import ByteRange
from ..core.names import NormalizedName
from ..core.home import render_home
from ..core.settings import Settings
from ..files.bodies import FileBody
from ..files.layout import Target
from ..index.catalog import LOCAL_ORIGIN, PageAnswer
from ..infra.invalidations import Invalidations
from ..infra.metrics import Metrics
from ..web.upload import Uploads, load_grants
from .proxy import Proxy, uploads_on
from .status import ProxyStatus

__all__ = ["Application"]

PREFETCH_CLOSE_SECONDS = 5.0  # at shutdown, for prefetches under way to end


class Application:
    """Answers the routes from *proxy*."""

    def __init__(
        self, settings: Settings, proxy: Proxy, metrics: Metrics, status: ProxyStatus, run_dir: Optional[str] = None
    ) -> None:
        """*run_dir*: with ``--workers``, where an invalidation reaches the other workers."""
        self.settings = settings
        self.metrics = metrics
        self._proxy = proxy
        self._status = status
        # For up to the index TTL, as we keep it ourselves (capped at PyPI's 600 s).
        self._ttl_max_age = int(min(min(i.ttl for i in settings.indexes), 600))
        self.project_list = proxy.indexes.rendered_list
        self.uploads: Optional[Uploads] = None
        if uploads_on(settings) and proxy.local is not None:
            local, files = proxy.local, proxy.files
            make_room = functools.partial(files.make_room_beside, local.root)
            self.uploads = Uploads(local, load_grants(settings), settings.max_upload_size, make_room)
        self._invalidations: Optional[Invalidations] = None
        if run_dir is not None:
            self._invalidations = Invalidations(run_dir, self._forget)
            self._invalidations.start()

    @property
    def page_max_age(self) -> Optional[int]:
        """None while a local index serves (an upload, yank or delete changes a page at
        once), from the moment another proxy's first upload makes its folder."""
        local = self._proxy.local
        return None if local is not None and local.active else self._ttl_max_age

    def project_page(self, project: NormalizedName, media: str, compress: bool, client: str = "") -> PageAnswer:
        prefetch = self._proxy.prefetch
        if _is_proxy(client):  # another proxpi-min judges for its own clients what it can serve
            return self._proxy.indexes.rendered_project(project, media, compress, all_files=True)
        if prefetch is None:
            return self._proxy.indexes.rendered_project(project, media, compress)
        asked, answer = prefetch.page_asked(client), None
        try:
            answer = self._proxy.indexes.rendered_project(project, media, compress)
        finally:
            prefetch.page_read(client, project, answer is not None and not answer.hit, asked)
        return answer

    def open_file(
        self,
        project: NormalizedName,
        filename: str,
        metadata: bool,
        head: bool,
        byte_range: Optional[ByteRange],
        client: str = "",
    ) -> FileBody:
        entry, index = self._proxy.indexes.locate_file(project, filename)
        if index == LOCAL_ORIGIN and self._proxy.local is not None:
            return self._proxy.local.open(project, entry.filename, metadata, byte_range)
        ahead, prefetch = self._proxy.download_ahead, self._proxy.prefetch
        if _is_proxy(client):
            # Another proxpi-min in front guesses and downloads ahead for its own clients:
            # its metadata reads (its guesses among them) are no client's picks.
            ahead = prefetch = None
        if prefetch is not None and metadata and not head:  # before it is served: whose pick it is
            prefetch.metadata_read(client, project, entry.filename)
        if ahead is not None and not metadata and not head and byte_range is None:
            # Before this file's own download: the others start a round trip sooner.
            ahead.file_requested(client, project, entry.filename)
        # The proxy's own, read from the wheel (or 404): where the index has none, and
        # offline or in an outage where the index's copy was never fetched (the cached
        # wheel has it).
        if metadata and (
            entry.metadata is None
            or (
                (self.settings.offline or self._proxy.indexes.index_down(index))
                and not self._proxy.files.has(project, entry, True)
            )
        ):
            body = self._proxy.metadata.open(project, entry, head, byte_range, index)
        else:
            body = self._proxy.files.open(project, entry, metadata=metadata, head=head, byte_range=byte_range, index=index)
            if metadata and body.source == "cache" and not head:  # (a cold one: when stored)
                self._proxy.metadata.upstream_served(project, Target(self._proxy.files.root, project, entry, True).path)
        if ahead is not None and metadata and not head:
            ahead.metadata_read(client, project, entry, index)
        return body

    def home(self, index_url: str, as_json: bool) -> bytes:
        document = self._status.status(index_url).as_json()
        if as_json:
            return json.dumps(document, indent=1).encode()
        return render_home(document, self.settings.admin_token is not None)

    def metrics_text(self) -> bytes:
        return self._status.metrics_text()

    def invalidate(self, project: Optional[NormalizedName]) -> None:
        self._forget(project)
        if self._invalidations is not None:
            self._invalidations.tell(project)

    def _forget(self, project: Optional[str]) -> None:
        """Make the next request for *project*'s page (None: the project list) ask upstream."""
        if project is None:
            self._proxy.indexes.invalidate_list()
        else:
            self._proxy.indexes.invalidate_project(NormalizedName(project))

    def close(self) -> None:
        """Stop prefetching, finish the pages being saved, write this worker's last
        numbers, close the files and connections; uploads still arriving leave nothing."""
        indexes, files, upstream = self._proxy.indexes, self._proxy.files, self._proxy.upstream
        if self._invalidations is not None:
            self._invalidations.close()
        for prefetch in (self._proxy.prefetch, self._proxy.download_ahead):
            if prefetch is not None:
                prefetch.close(PREFETCH_CLOSE_SECONDS)
        indexes.close()
        self._status.close()
        if self.uploads is not None:
            self.uploads.close()
        files.close()
        upstream.close()


def _is_proxy(client: str) -> bool:
    """Whether *client* (its address and User-Agent) is another proxpi-min (a regional
    proxy whose index this one is)."""
    return client.partition(" ")[2].startswith("proxpi-min/")
