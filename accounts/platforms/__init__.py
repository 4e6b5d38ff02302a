"""TikTok and Instagram clients (tiktok.py, instagram.py) behind one interface (clients.py), their HTTP
plumbing (http.py), typed results and errors (base.py), and the local sandbox of both (sandbox/)."""

from .clients import PlatformClient, get_client

__all__ = ["PlatformClient", "get_client"]
