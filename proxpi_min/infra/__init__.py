"""Small machinery every layer above uses.

Owns the metrics registry, work after the answer, logging, TLS contexts, atomic files and
lock files, and what worker processes share (their numbers, invalidations). May import
``core`` only.
"""
