"""Index pages: the upstream client (HTTP(S), and file:// read from disk) and its name
resolution, per-index TTL caches, saved pages, the rendered pages kept in memory, and
the catalog.

The catalog merges every configured index into one view with the guard rails applied;
it is what a request for ``/index/`` asks. May import ``infra`` and ``core``.
"""
