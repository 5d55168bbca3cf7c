"""``mnist-lite serve``: a page to draw digits on, and the HTTP API behind it (serving/), run by uvicorn."""

import json
import os
import re
import signal
import socket

from jsonargparse.typing import PositiveInt

from mnist_lite.boundaries import checkpoints
from mnist_lite.errors import UserError

EVERY_INTERFACE = ("0.0.0.0", "::")
MAX_CONNECTIONS = 1000  # open at once, idle ones included, before new ones get 503 (under the usual 1,024 files)
WORKER_HEALTHCHECK_S = 30  # a worker still importing torch on a busy machine answers late: the default restarts it


def serve(
    ckpt_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: PositiveInt = 1,
    max_upload_mb: PositiveInt = 4,
    allowed_hosts: list[str] | None = None,
) -> None:
    """Serve a page to draw digits on and watch the model read them, and the API behind it.

    Args:
        ckpt_path: a .ckpt file; 'last' for the newest run's last checkpoint; 'best' for the checkpoint with the
            highest val_acc in any run under lightning_logs/.
        host: the address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 (or ::) is every network it is on.
        port: the port; 0 picks a free one.
        workers: server processes sharing the port, each with the model loaded; one per core serves most.
        max_upload_mb: uploads larger than this many MiB are refused with 413 before they are read.
        allowed_hosts: host names to answer besides localhost and IP addresses (the name a proxy or DNS gives this
            server; * for any), whose pages may also post to the API.
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port: choose one from 1 to 65535, or 0 for any free one.")
    if odd := [name for name in allowed_hosts or () if name != "*" and not re.fullmatch(r"[\w.-]+", name)]:
        raise UserError(f"--allowed_hosts {odd[0]!r}: give host names alone, as example.com (no scheme, no port).")
    if host.strip() in ("", "0", "*"):
        raise UserError(f"--host {host!r} is not an address: 127.0.0.1 for this machine, 0.0.0.0 for every network.")
    try:
        import uvicorn

        from mnist_lite.serving import app, protocol
    except ImportError as e:
        raise UserError(f"serve needs the serve extra ({e.name} is missing): pip install -e '.[serve]'.") from None

    checkpoint, model = checkpoints.load_given(ckpt_path)  # a bad checkpoint is one line here, not a failed worker
    if workers == 1:  # uvicorn runs the app in this process: it serves the model just checked
        app.CHECKED[checkpoint.resolve()] = model
    settings = {"ckpt_path": str(checkpoint.resolve()), "max_upload_bytes": max_upload_mb * 2**20}
    os.environ[app.SETTINGS_ENV] = json.dumps(settings | {"allowed_hosts": allowed_hosts or []})
    try:  # bound here, so that --port 0 can print its port; accepted connections inherit TCP_NODELAY from it
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=2048, dualstack_ipv6=host == "::")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else every kept-alive reply waits for an ACK
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}. Choose another --port.") from None
    if host in EVERY_INTERFACE:
        print("Listening on every network interface: anyone who can reach this machine can use the API.")
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving {checkpoint} at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", flush=True)
    # uvicorn finishes the requests in flight, then raises the signal again: SIGTERM, like Ctrl-C, as the
    # KeyboardInterrupt that uvicorn.run takes as the end, so the command ends with its own line and exit code 0.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with sock:  # each worker builds its app from the environment
            uvicorn.run(
                f"{app.__name__}:from_environment",
                factory=True,
                fd=sock.fileno(),
                workers=workers,
                http=protocol.HeaderDeadline,
                limit_concurrency=MAX_CONNECTIONS,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
                log_level="warning",  # the command's own lines say what happens
                access_log=False,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("Stopped.", flush=True)
