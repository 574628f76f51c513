"""Small machinery every layer above uses.

Owns the metrics registry, work after the answer, logging, TLS contexts, atomic files and
lock files, and numbers shared between worker processes. May import ``core`` only.
"""
