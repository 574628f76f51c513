"""proxpi-min: a caching proxy for the Python Package Index, standard library only."""

__version__ = "0.1.0"
__all__ = ["__version__"]
