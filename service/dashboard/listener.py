"""The admin listener: the dashboard app on its own uvicorn server, in a daemon thread of the
`serve` process (with `--workers N`, of the parent process: one listener for all workers).

The socket is bound here, in the caller's thread, so a port in use stops `serve` with a message
instead of failing silently in the thread.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from service.config import Settings
from service.dashboard.app import create_admin_app

STARTUP_TIMEOUT_SECONDS = 15.0


class AdminListener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.admin.host
        self.port = settings.admin.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard"

    def start(self) -> None:
        """Bind, then serve in a daemon thread; returns once the server accepts connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_admin_app(self.settings),
            log_level=self.settings.log_level.lower(),
            access_log=False,
            log_config=None,  # the process's logging (text or JSON) as configured by serve
            # request.client must be the TCP peer: it decides whether a proxy is trusted.
            proxy_headers=False,
            server_header=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="admin-listener", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the admin listener on {self.host}:{self.port} did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
