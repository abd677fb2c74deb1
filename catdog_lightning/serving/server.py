"""``scripts/serve.py``: a LitServe server over a trained checkpoint, with a page to drop photos on.

Routes: ``POST /predict`` (LitServe's, batched), ``GET /health`` and ``GET /info`` (LitServe's: readiness, and
the model's description beside the server's settings), and ``GET /`` (the page in page.html, in place of
LitServe's placeholder).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from ..allow_list import allowed_modules
from ..errors import ConfigError, Interrupted, QuietOnceStopped
from ..inference.locate import checkpoint_or_latest
from ..inference.onnx_runtime import check_backend
from ..models.loading import check_loadable
from ..models.nets import short_name
from ..storage.checkpoints import read_checkpoint, saved_classes
from ..storage.runs import RunDirectory

PAGE = Path(__file__).with_name("page.html")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # this machine only, or every interface


def describe(ckpt: str, allowed: tuple[str, ...] = ()) -> dict:
    """What /info and every answer say about the model: its run and checkpoint, architecture, image size, and
    the test accuracy its run measured (metrics.json), when there is one."""
    saved = read_checkpoint(ckpt)
    hparams = check_loadable(saved, ckpt, allowed)  # before any worker starts: a bad one would answer every photo 400
    run = RunDirectory.owning(Path(ckpt))
    name = f"{run.name}/{Path(ckpt).name}" if run is not None else Path(ckpt).name
    test_acc = None
    if run is not None and run.metrics_file.is_file():
        try:
            metrics = json.loads(run.metrics_file.read_text())
            if Path(metrics.get("tested_checkpoint", "")).name == Path(ckpt).name:
                test_acc = metrics.get("test/acc")
        except (OSError, ValueError):
            pass
    return {
        "name": name,  # the run and the file, never where they are on the server's disk
        "arch": short_name(hparams["net"]),
        "image_size": int(hparams["image_size"]),
        "test_acc": test_acc,
        "looks": 1 + bool(hparams.get("tta_flip")),
        "classes": saved_classes({"hyper_parameters": hparams}),
    }


def check(args: dict) -> None:
    check_backend(args["backend"])
    for flag in ("workers", "max_batch_size"):
        if not 1 <= args[flag] <= 64:
            raise ConfigError(f"--{flag} must be between 1 and 64, got {args[flag]}.")
    if not 0 <= args["batch_timeout"] <= 10:
        raise ConfigError(f"--batch_timeout is seconds a batch may wait to fill: 0 to 10, got {args['batch_timeout']}.")
    if not 0 < args["max_upload_mb"] <= 1024:
        raise ConfigError(f"--max_upload_mb must be between 0 and 1024, got {args['max_upload_mb']}.")
    if not 1024 <= args["port"] < 65536:
        raise ConfigError(f"--port must be between 1024 and 65535, got {args['port']}.")
    if args["host"] not in HOSTS:
        raise ConfigError(f"--host must be one of {', '.join(HOSTS)} (LitServe's choice), got {args['host']!r}.")
    if not 1 <= args["max_photos"] <= 10_000:
        raise ConfigError(f"--max_photos must be between 1 and 10000, got {args['max_photos']}.")
    if not 1 <= args["max_pixels"] <= 2**31:
        raise ConfigError(f"--max_pixels must be between 1 and 2**31, got {args['max_pixels']}.")


API_KEY_ENV = "CATDOG_API_KEY"


def api_key(args: dict) -> str | None:
    """The key clients must send: --api_key, else the first line of --api_key_file, else $CATDOG_API_KEY (a flag
    shows in ``ps``; a file or the environment do not). An empty key is refused, never taken as "no key"."""
    if args.get("api_key") is not None:
        key, source = args["api_key"], "--api_key"
    elif args.get("api_key_file"):
        try:
            lines = Path(args["api_key_file"]).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--api_key_file {args['api_key_file']}: cannot read it ({exc}).") from None
        key, source = (lines[0].strip() if lines else ""), f"--api_key_file {args['api_key_file']}"
    elif API_KEY_ENV in os.environ:
        key, source = os.environ[API_KEY_ENV], f"${API_KEY_ENV}"
    else:
        return None
    if not key.strip():
        raise ConfigError(f"{source} is empty: give a key, or leave it out to serve without one.")
    return key


def build_server(args: dict, workdir: str | os.PathLike | None = None):
    """The LitServer (not yet running) for the flags of serve.py; an ONNX backend's model is written in
    ``workdir`` (the caller removes it when the server stops: restarted workers read it again)."""
    import litserve as ls
    from fastapi.responses import HTMLResponse

    from ..inference.export import export_model
    from ..inference.onnx_runtime import FORMAT
    from .api import CatDogAPI, thread_share
    from .uploads import CheckedUploads
    from .watch import MONITOR_EVERY_S, WorkerWatch

    check(args)
    key = api_key(args)
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    allowed = allowed_modules(args)
    model = {**describe(ckpt, allowed), "backend": args["backend"]}
    onnx_path = None
    if args["backend"] != "torch":  # the exported (and for int8, quantised) graph, written once at start
        folder = Path(workdir or tempfile.mkdtemp(prefix="catdog-serve-"))
        onnx_path = str(folder / f"model.{args['backend']}.onnx")
        export_model(ckpt, FORMAT[args["backend"]], onnx_path, allowed)
    api = CatDogAPI(
        ckpt,
        args["backend"],
        onnx_path,
        model,
        api_key=key,
        allowed=allowed,
        threads=thread_share(args["workers"]),
        max_photos=args["max_photos"],
        max_pixels=args["max_pixels"],
        max_batch_size=args["max_batch_size"],
        batch_timeout=args["batch_timeout"],
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=args["workers"],
        timeout=args["timeout"],
        max_payload_size=int(args["max_upload_mb"] * 2**20),
        model_metadata=model,
        restart_workers=True,  # a worker that dies is started again; its requests get a 503 (WorkerWatch)
        disable_openapi_url=key is not None,  # /docs, /redoc and /openapi.json would answer without the key
    )
    server.monitor_internal = MONITOR_EVERY_S  # LitServe's spelling; /health is 503 within this of a death
    server.app.add_middleware(WorkerWatch, server=server)
    # Bodies LitServe's parser would fail on (a 500 and a traceback) are one line and a 4xx before it sees them.
    server.app.add_middleware(
        CheckedUploads, max_bytes=int(args["max_upload_mb"] * 2**20), max_photos=args["max_photos"], api_key=key
    )
    # The page in place of LitServe's "litserve running" at /; without a key, as it holds nothing secret.
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != "/"]
    page = PAGE.read_text()
    server.app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    return server, model


def serve_command(args: dict) -> None:
    """scripts/serve.py: build the server and run it until Ctrl-C or SIGTERM."""
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise ConfigError("serving needs the serve extra: pip install -e '.[serve]' (make serve does this)") from None
    # SIGTERM (kill, systemd, Docker) stops the server as Ctrl-C does: LitServe's own shutdown ends its HTTP and
    # inference processes, then the ONNX model written for the workers is removed.
    stopped_by: list[int] = []
    owner = os.getpid()

    def stop(signum, frame) -> None:
        if os.getpid() != owner:  # a forked HTTP process inherits this handler: there the signal does its default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stopped_by.append(signum)
        after_stop.stopped = True
        raise KeyboardInterrupt

    # LitServe's worker monitor asks its manager process every 0.1 s (serving/watch.py) whether to go on; once
    # the shutdown has ended that process the question fails, and LitServe logs it with a traceback (its daemon
    # thread may do so as this process exits, after this function: so the filter stays).
    monitor_log = logging.getLogger("litserve.server")
    after_stop = QuietOnceStopped("Monitoring worker crashed")
    monitor_log.addFilter(after_stop)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with tempfile.TemporaryDirectory(prefix="catdog-serve-") as workdir:
            _serve(args, workdir)
    except KeyboardInterrupt:  # stopped while starting: nothing was serving yet
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    signum = stopped_by[0] if stopped_by else signal.SIGINT
    line = f"stopped by {signal.Signals(signum).name}: every worker ended, port {args['port']} free."
    if signum == signal.SIGINT:
        raise Interrupted(line, 130)
    print(line, file=sys.stderr)


def _serve(args: dict, workdir: str) -> None:
    server, model = build_server(args, workdir)
    print(
        f"Serving {model['name']} ({model['arch']}, {model['image_size']} px, {model['backend']}) "
        f"on http://{args['host']}:{args['port']}/ "
        f"with {args['workers']} worker(s), batches of up to {args['max_batch_size']}; "
        f"POST /predict, GET /health, GET /info",
        flush=True,
    )
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # the workers' imports
    server.run(host=args["host"], port=args["port"], generate_client_file=False, log_level="warning",
               num_api_servers=1)  # fmt: skip
