"""hitstream's HTTP server: stopping it waits for the requests in flight.

A request thread still running native code (DuckDB) when the interpreter exits is unwound by force and aborts the
process (SIGABRT), so `stop_all`, which `hitstream run` calls at its end, must not return while a handler runs."""
import socket
import threading
import time
import urllib.request

from hitstream import server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stop_all_waits_for_a_request_in_flight():
    entered, finished = threading.Event(), threading.Event()

    def slow(params):
        entered.set()
        time.sleep(0.5)
        finished.set()
        return 200, {"ok": True}

    server.add_route("/test-slow", slow)
    port = _free_port()
    assert server.ensure_started(port) is not None
    client = threading.Thread(target=lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/test-slow", timeout=5))
    client.start()
    assert entered.wait(5)
    server.stop_all()
    assert finished.is_set()  # the handler ran to its end before stop_all returned
    client.join(5)
    assert server.ensure_started(port) is not None  # stopped servers are forgotten: the port can serve again
    server.stop(port)
