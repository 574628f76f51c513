"""The composition root: settings in, caches and a server out (for ``serve``, ``warm``
and ``verify`` alike), the status document, and the worker supervisor.

May import every layer below: ``web``, ``files``, ``index``, ``infra``, ``core``.
"""
