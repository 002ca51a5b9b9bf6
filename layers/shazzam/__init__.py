"""Shazzam for Clothes: the library every function, the CLI and the training scripts share."""

__version__ = "0.1.0"
