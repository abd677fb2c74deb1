"""A trained model on ONNX Runtime (``--backend onnx`` / ``int8``): its fp32 export, or the INT8 copy of it that
:mod:`.quantize` makes, in a session. Glue only: ONNX Runtime runs the graph.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError
from .export import export_model, needs_export_extra

BACKENDS = ("torch", "onnx", "int8")
# export.py's format for each backend's file
FORMAT = {"onnx": "onnx", "int8": "onnx-int8"}


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend != "torch":
        needs_export_extra()


def session(path: str | os.PathLike, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextmanager
def onnx_model(ckpt: str | os.PathLike, backend: str, allowed: tuple[str, ...] = ()) -> Iterator[Path]:
    """The ONNX file of ``backend`` for ``ckpt``, in a folder of its own removed afterwards."""
    folder = tempfile.mkdtemp(prefix="catdog-onnx-")
    try:
        path = Path(folder) / f"model.{backend}.onnx"
        export_model(ckpt, FORMAT[backend], path, allowed)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
