"""The version of scnet-deploy, in a module of its own so that any module can read it without importing the package
(and everything its __init__ imports)."""

__version__ = "0.1.0"
