"""The shape of a ``POST /predict`` body, checked before LitServe parses it: a body LitServe's parser fails on
(a raw JPEG, a multipart body whose boundary does not match, broken or 100,000-deep JSON, more files than
Starlette's form parser takes) would otherwise be a 500 with a traceback in the server's log. Here each is one
line and a 4xx; a body of the right shape goes on to LitServe exactly as it came.

An ASGI middleware (the outermost layer of the app): it reads the body once, up to the payload limit, and
hands the same bytes on. A request without the right API key, or over the limit, is passed on untouched:
LitServe answers those (401, 413) as always.
"""

from __future__ import annotations

import hmac
import json

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
HOW = 'send the photo as the multipart field \'image\' (curl -F image=@cat.jpg URL) or as JSON {"image": "<base64>"}'


def body_problem(content_type: str, body: bytes, max_photos: int) -> tuple[int, str] | None:
    """``(status, one line)`` for a body LitServe could not parse, or None when it can."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError) as exc:
            reason = str(exc).split(":")[0] if not isinstance(exc, RecursionError) else "nested too deeply"
            return 400, f"the body is not JSON ({reason}); {HOW}"
        if not isinstance(parsed, dict):
            return 400, f"the JSON body must be an object; {HOW}"
        return None
    if kind == "multipart/form-data":
        params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
        boundary = params.get("boundary", "").strip('"').encode("latin-1", "replace")
        if not boundary or b"--" + boundary not in body:
            return 400, f"a multipart body whose boundary is missing or does not match its Content-Type; {HOW}"
        if body.count(b"--" + boundary) - 1 > max_photos:
            return 413, f"more than {max_photos} parts in one request (--max_photos): send the photos in several"
        return None
    if kind == "application/x-www-form-urlencoded":
        return None
    shown = kind or "none"
    return 415, f"Content-Type {shown} is not read here; {HOW}"


class CheckedUploads:
    """ASGI middleware for ``POST /predict``: see the module's docstring."""

    def __init__(self, app, max_bytes: int, max_photos: int, api_key: str | None = None, path: str = "/predict"):
        self.app, self.max_bytes, self.max_photos, self.api_key, self.path = app, max_bytes, max_photos, api_key, path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-api-key", "")
        unauthorised = self.api_key and not hmac.compare_digest(key.encode(), self.api_key.encode())
        length = headers.get("content-length", "")
        too_long = length.isdigit() and int(length) > self.max_bytes
        if unauthorised or too_long:  # LitServe's answers (401, 413): nothing of the body is read here
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(b"".join(chunks), receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:  # a body without Content-Length: LitServe's limit answers it
                return await self.app(scope, _replay(b"".join(chunks), receive, more), send)
        body = b"".join(chunks)
        problem = body_problem(headers.get("content-type", ""), body, self.max_photos)
        if problem is None:
            return await self.app(scope, _replay(body, receive), send)
        status, line = problem
        payload = json.dumps({"error": line}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive, more: bool = False):
    """A ``receive`` that gives ``body`` first, then whatever the client still sends."""
    given = False

    async def replay():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
