"""Index pages: the upstream client, per-index TTL caches, saved pages and the catalogue.

The catalogue merges every configured index into one view with the guard rails applied;
it is what a request for ``/index/`` asks. May import ``infra`` and ``core``.
"""
