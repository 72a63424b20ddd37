"""Generated images: providers answer with the bytes inline, a response carries a URL. The bytes
are kept in Redis for a while and any worker serves them at `/ai/images/<id>`."""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

PREFIX = "router:image:"


def image_id(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


class ImageStore:
    def __init__(self, client: aioredis.Redis, url_base: str, ttl_s: int) -> None:
        self.client = client
        self.url_base = url_base.rstrip("/")
        self.ttl_s = max(1, ttl_s)

    async def save(self, request_id: str, data: bytes, content_type: str) -> str:
        ident = image_id(request_id)
        await self.client.set(PREFIX + ident, content_type.encode() + b"\n" + data, ex=self.ttl_s)
        return f"{self.url_base}/ai/images/{ident}"

    async def load(self, ident: str) -> tuple[bytes, str] | None:
        stored = await self.client.get(PREFIX + ident)
        if not isinstance(stored, bytes):
            return None
        content_type, _, data = stored.partition(b"\n")
        return data, content_type.decode()
