"""A worker that dies mid-request: its requests get a 503 at once, not a wait until ``--timeout``.

LitServe restarts a dead inference worker (``restart_workers``), but the requests it held wait in the HTTP
process's response buffer until they time out: LitServe's monitor runs in the main process, which holds no
requests, and it learns which worker held a request only from the worker's answer. This ASGI middleware, in
the HTTP process, watches the workers' states that LitServe shares between processes; when one leaves "ready"
(the monitor is restarting it) it answers every request then in flight with a 503 in one line. A request
that a healthy worker would have answered may get one too (LitServe does not say which worker holds which),
and the client sends it again. ``/health`` answers 503 from the same states, so the monitor is made to look
every 0.1 s (LitServe's default is 2 s).
"""

from __future__ import annotations

import asyncio

CHECK_EVERY_S = 0.05
MONITOR_EVERY_S = 0.1
FAILED = "the inference worker stopped while answering (it is being restarted); send the request again"


def all_ready(states: dict) -> bool:
    return bool(states) and all(state == "ready" for state in states.values())


class WorkerWatch:
    """Fails the requests in flight with a 503 when an inference worker stops being ready."""

    def __init__(self, app, server):
        self.app, self.server, self.task = app, server, None

    async def __call__(self, scope, receive, send):
        if self.task is None and scope["type"] in ("http", "lifespan"):
            self.task = asyncio.get_running_loop().create_task(self.watch(), name="catdog-worker-watch")
        await self.app(scope, receive, send)

    async def watch(self) -> None:
        ready = False
        while True:
            try:  # a dict LitServe's manager process shares: a local round trip of well under a millisecond
                states = dict(self.server.workers_setup_status)
            except (OSError, EOFError):  # the manager has gone: the server is shutting down
                return
            now = all_ready(states)
            if ready and not now:
                self.fail_in_flight()
            ready = now
            await asyncio.sleep(CHECK_EVERY_S)

    def fail_in_flight(self) -> None:
        from fastapi import HTTPException
        from litserve.utils import LitAPIStatus

        for item in list(self.server.response_buffer.values()):
            if not item.event.is_set():
                item.response = (HTTPException(status_code=503, detail=FAILED), LitAPIStatus.ERROR)
                item.event.set()
