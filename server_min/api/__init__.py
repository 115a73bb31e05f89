"""The HTTP API: ASGI routes, request models, the auth gate, body limits and link pages (see app.py)."""

from server_min.api.app import create_app

__all__ = ["create_app"]
