"""``mnist-lite serve``: a page to draw digits on, and the HTTP API behind it (server.py), run by uvicorn."""

import json
import os
import signal
import socket
from typing import Any

from jsonargparse.typing import PositiveInt

from mnist_lite.boundaries import checkpoints
from mnist_lite.errors import UserError

EVERY_INTERFACE = ("0.0.0.0", "::")
MAX_CONNECTIONS = 1000  # open at once, idle ones included, before new ones get 503 (under the usual 1,024 files)


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
    if host.strip() in ("", "0", "*"):
        raise UserError(f"--host {host!r} is not an address: 127.0.0.1 for this machine, 0.0.0.0 for every network.")
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from mnist_lite.serving import app as server
    except ImportError as e:
        raise UserError(f"serve needs the serve extra ({e.name} is missing): pip install -e '.[serve]'.") from None

    checkpoint, model = checkpoints.load_given(ckpt_path)  # a bad checkpoint is one line here, not a failed worker
    os.environ[server.CKPT_ENV] = str(checkpoint.resolve())  # how the workers, started afresh, find it
    os.environ[server.MAX_UPLOAD_ENV] = str(max_upload_mb * 1024 * 1024)
    os.environ[server.HOSTS_ENV] = json.dumps(allowed_hosts or [])
    app = server.create_app(model, checkpoint.name, max_upload_mb * 1024 * 1024, allowed_hosts or [])
    try:
        sock = _listen(host, port)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}. Choose another --port.") from None
    shown = f"[{host}]" if ":" in host else host
    if host in EVERY_INTERFACE:
        print("Listening on every network interface: anyone who can reach this machine can use the API.")
    print(f"Serving {checkpoint} at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", flush=True)
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "http": server.HeaderDeadline}
    options |= {"limit_concurrency": MAX_CONNECTIONS, "timeout_keep_alive": 5}
    if workers > 1:  # uvicorn's supervisor starts them, restarts one that dies, and stops them on SIGINT/SIGTERM
        config = uvicorn.Config(f"{server.__name__}:from_environment", factory=True, workers=workers, **options)
        Multiprocess(config, sockets=[sock]).run()
        print("Stopped.", flush=True)
        return
    # On SIGINT or SIGTERM uvicorn finishes the requests in flight, then raises the signal again for the handler
    # it found: this one, so the command ends with its own line and exit code 0 instead of a killed process.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Stopped.", flush=True)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that --port 0 can print the port it got. Made with IPPROTO_TCP named:
    asyncio sets TCP_NODELAY only on such sockets, and without it every keep-alive reply waits 40 ms for an ACK."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stopped
