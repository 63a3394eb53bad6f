"""fakesnow's server on a free local port, in a thread, for dbt-snowflake (``protocol: http``).

``fakesnow.server()`` starts it too, but once any test imports the ``fakesnow.server``
module that name is the module, not the function: every test starts it from here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def fakesnow_server() -> Iterator[dict]:
    """Yields the connection arguments of the running server (user, password, account, host,
    port, protocol, session_parameters)."""
    import fakesnow.server
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fakesnow.server.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="fakesnow server", daemon=True)
    thread.start()
    while thread.is_alive() and not server.started:
        time.sleep(0.1)
    if not server.started:
        raise RuntimeError("fakesnow's server did not start")
    try:
        yield {"user": "fake", "password": "snow", "account": "fakesnow", "host": "127.0.0.1", "port": port,
               "protocol": "http", "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}}
    finally:
        server.should_exit = True
        thread.join()
