"""Distribution files on disk: the cache-dir layout, the LRU file cache and its ledger,
downloads shared between clients, the hash checks of their bytes, and the bodies a
response sends.

May import ``index`` (for the upstream client), ``infra`` and ``core``.
"""
