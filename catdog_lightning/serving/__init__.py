"""Serving a trained model over HTTP with LitServe: the LitAPI (api.py), the server and its page (server.py)."""
