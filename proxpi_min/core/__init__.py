"""Rules as pure code: values in, values out.

Owns names, URLs, units, the error tree, settings parsing, the simple-API model and its
parsers, page rendering, content negotiation, the home page, byte ranges, the guard-rail
policies and lock-file parsing. No sockets, files, threads or clocks here (time is
passed in). Imports nothing else from the package.
"""
