"""OpenAI-compatible endpoints named without their credentials: the identity a reply cache and a
run's parameters key on, and the host a message may show (both the LLM judge and the OpenAI audio
backend use them)."""
from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_BASE_HOST = "api.openai.com"  # what the openai client uses when no base URL is set
DEFAULT_ENDPOINT = f"https://{DEFAULT_BASE_HOST}/v1"


def endpoint_id(base_url: str | None) -> str:
    """The base URL as a cache identity: scheme, host, port and path, without any user:password@."""
    if not base_url:
        return DEFAULT_ENDPOINT
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme or 'https'}://{netloc}{parts.path.rstrip('/')}"


def endpoint_host(base_url: str | None) -> str:
    """The host (and port) of ``base_url`` for messages, without any user:password@."""
    if not base_url:
        return DEFAULT_BASE_HOST
    parts = urlsplit(base_url)
    host = parts.hostname or base_url  # .hostname drops any user:password@ part
    return f"{host}:{parts.port}" if parts.port else host
