"""The LitAPI: what LitServe runs in each inference worker, for each batch of requests.

LitServe gives the HTTP server (FastAPI and uvicorn), the request queue, dynamic batching (requests that
arrive within ``batch_timeout`` of each other share one forward pass, up to ``max_batch_size``), worker
processes and their restart, timeouts, the payload limit and the health route. This module is the glue: a
request's photos are decoded exactly as training decoded them, the model loads through the safe checkpoint
loader, and a bad photo is answered with a 4xx for its own request alone.

LitServe fails every request of a batch when one of them raises, so nothing here raises per request:
``decode_request`` returns a :class:`Rejected` for a bad one, which travels through the batch untouched and
becomes its 4xx response in ``encode_response``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import signal
from dataclasses import dataclass

import litserve as ls
import numpy as np
import torch
from fastapi import Depends, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from ..classes import as_columns, is_catdog, predicted, top
from ..data.decode import TooManyPixels, decode_image
from ..inference.onnx_runtime import session
from ..inference.predictor import load_classifier

FIELD = "image"  # the multipart field, or the JSON key, of a photo (several: repeat it, or a JSON list)


@dataclass(frozen=True)
class Rejected:
    """A request that cannot be answered: its status and one line saying why."""

    status: int
    message: str


def _photos(request, max_photos: int = 64) -> list[tuple[str, bytes]] | Rejected:
    """``(name, bytes)`` of each photo of a multipart form (field ``image``) or a JSON body (base64, wrapped in
    lines or not); more than ``max_photos`` photos are refused before any is decoded."""
    too_many = Rejected(413, f"more than {max_photos} photos in one request (--max_photos): send them in several")
    if hasattr(request, "getlist"):  # a form (multipart upload)
        files = request.getlist(FIELD)
        if not files:
            return Rejected(400, f"no '{FIELD}' field: upload the photo as multipart field '{FIELD}'")
        if len(files) > max_photos:
            return too_many
        photos = []
        for item in files:
            if not hasattr(item, "file"):
                return Rejected(400, f"'{FIELD}' must be a file upload, not text")
            photos.append((item.filename or FIELD, item.file.read()))
        return photos
    if not isinstance(request, dict) or FIELD not in request:
        return Rejected(400, f'send JSON {{"{FIELD}": "<base64 of the file>"}} or a multipart field "{FIELD}"')
    items = request[FIELD] if isinstance(request[FIELD], list) else [request[FIELD]]
    if len(items) > max_photos:
        return too_many
    photos = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            return Rejected(400, f"{FIELD}[{i}] must be base64 text, not {type(item).__name__}")
        try:  # line breaks and spaces are allowed (what `base64` prints), any other stray character is not
            photos.append((f"{FIELD}[{i}]", base64.b64decode("".join(item.split()), validate=True)))
        except (binascii.Error, ValueError):
            return Rejected(400, f"{FIELD}[{i}] is not base64")
    return photos


def _in_words(exc: Exception) -> str:
    """An exception as one short line for a client: no Python reprs (``<_io.BytesIO object at 0x...>``)."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the upload", " ".join(str(exc).split()))
    return text[:160] or type(exc).__name__


class CatDogAPI(ls.LitAPI):
    """Class probabilities of uploaded photos through a trained checkpoint (``backend`` torch) or its ONNX export
    (onnx): each photo's label, every class's probability and the three most probable (for the lesson's classes
    also ``p_cat``, as before classes were a model's)."""

    def __init__(self, ckpt: str, backend: str = "torch", onnx_path: str | None = None, model: dict | None = None,
                 api_key: str | None = None, threads: int = 0, max_photos: int = 64, max_pixels: int | None = None,
                 allowed: tuple[str, ...] = (), **batching):  # fmt: skip
        super().__init__(**batching)
        self.allowed = allowed
        self.ckpt, self.backend, self.onnx_path, self.threads = ckpt, backend, onnx_path, threads
        self.model_info, self.api_key = model or {}, api_key
        self.max_photos, self.max_pixels = max_photos, max_pixels

    def setup(self, device: str) -> None:
        # Ctrl-C reaches the whole process group; the server's main process ends the workers, quietly.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.classifier = load_classifier(self.ckpt, "cpu" if device == "cpu" else device, allowed=self.allowed)
        self.size, self.draft = self.classifier.image_size, self.classifier.draft
        self.classes = list(self.classifier.classes)
        if self.backend != "torch":  # onnx, int8: the export on ONNX Runtime
            self.session = session(self.onnx_path, self.threads)

    def authorize(self, key: str | None = Depends(APIKeyHeader(name="X-API-Key", auto_error=False))) -> None:
        """With --api_key, every route but the page needs the header ``X-API-Key``."""
        if self.api_key and not hmac.compare_digest((key or "").encode(), self.api_key.encode()):
            raise HTTPException(401, "wrong or missing X-API-Key header")

    def decode_request(self, request, **kwargs) -> list[np.ndarray] | Rejected:
        photos = _photos(request, self.max_photos)
        if isinstance(photos, Rejected):
            return photos
        if not photos:
            return Rejected(400, f"'{FIELD}' holds no photo")
        images = []
        for name, data in photos:
            if not data:
                return Rejected(400, f"{name}: the file is empty")
            try:
                images.append(decode_image(data, self.size, self.draft, self.max_pixels))
            except TooManyPixels as exc:
                return Rejected(422, f"{name}: {exc} (--max_pixels)")
            except Exception as exc:  # noqa: BLE001 (every unreadable photo is the client's 4xx, never a crash)
                reason = _in_words(exc)
                return Rejected(422 if "decompression bomb" in reason.lower() else 400, f"{name}: not a readable "
                                f"JPEG, PNG, BMP or WebP photo ({type(exc).__name__}: {reason})")  # fmt: skip
        return images

    def batch(self, inputs: list) -> list:
        return inputs  # each request's own list of photos (or its rejection); predict pools them

    def predict(self, requests: list, **kwargs) -> list:
        """One forward pass for every photo of every request in the batch; class probabilities back per request."""
        if self.max_batch_size == 1:  # LitServe hands over one request, unbatched
            return self.predict([requests])[0]
        photos = [image for r in requests if not isinstance(r, Rejected) for image in r]
        if not photos:
            return requests
        pixels = np.stack(photos).transpose(0, 3, 1, 2)  # N x 3 x S x S uint8, as training's
        if self.backend != "torch":
            (probs,) = self.session.run(None, {"images": pixels.astype(np.float32) / 255})
            probs = as_columns(torch.from_numpy(probs), len(self.classes)).tolist()
        else:
            probs = self.classifier.probabilities(torch.from_numpy(pixels)).tolist()
        out, start = [], 0
        for request in requests:
            if isinstance(request, Rejected):
                out.append(request)
            else:
                out.append(probs[start : start + len(request)])
                start += len(request)
        return out

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output, **kwargs):
        if isinstance(output, Rejected):
            return JSONResponse({"error": output.message}, status_code=output.status)
        answers = [answer(row, self.classes) for row in output]
        if len(answers) == 1:
            return {**answers[0], "model": self.model_info.get("name")}
        return {"predictions": answers, "model": self.model_info.get("name")}


def answer(row: list[float], classes: list[str]) -> dict:
    """One photo's JSON answer: its label, each class's probability, the three most probable classes (and, for
    the lesson's classes, p_cat as it always was)."""
    probabilities = {name: round(float(p), 6) for name, p in zip(classes, row, strict=True)}
    out = {"label": classes[predicted(row)]}
    if is_catdog(classes):
        out["p_cat"] = probabilities["cat"]
    return out | {
        "probabilities": probabilities,
        "top": [{"label": name, "p": round(p, 6)} for name, p in top(row, classes)],
    }


def thread_share(workers: int) -> int:
    """Intra-op threads for each of ``workers`` inference processes: the cores, shared out."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))
