"""Chalice entry point: Chalice looks for ``app.py`` next to ``.chalice/``."""

from ucs_lambda.app import app

__all__ = ["app"]
