"""geostp's version, in a module of its own so that internal modules need not import the package façade."""

__version__ = "0.1.0"
