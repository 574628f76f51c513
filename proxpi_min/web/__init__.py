"""HTTP: the socket server (connection cap, TLS, drain), the HTTP/1.1 wire layer, what
answers tell caches, and the router that turns a URL into a call on the application
object.

May import ``files``, ``index``, ``infra`` and ``core``; it never builds caches itself.
"""
