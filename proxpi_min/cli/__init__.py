"""The command line: flags and subcommands (``serve``, ``warm``, ``verify``) and the
progress line. The top layer: may import anything in the package, nothing imports it.
"""
