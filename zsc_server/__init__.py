"""Server-side logic of the zero-shot classification ensemble.

The Triton Python-backend models in ``model_repository/`` are thin adapters over
these plain modules, which are unit-tested without a server.
"""
