"""Small network helpers of the security tests: free ports, this machine's other addresses, plain HTTP GETs."""
import http.client
import json
import socket
from typing import Dict, List, Optional, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_addresses() -> List[str]:
    """Addresses of this machine that are not 127.0.0.1: the outbound interface's (when there is a route out) and
    127.0.0.2, which a server bound to 0.0.0.0 would answer on and one bound to 127.0.0.1 does not."""
    addresses = ["127.0.0.2"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks the outbound interface
            own = probe.getsockname()[0]
        except OSError:
            own = None
    if own and not own.startswith("127."):
        addresses.insert(0, own)
    return addresses


def refuses(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
    except (ConnectionRefusedError, socket.timeout):
        return True
    return False


def get(port: int, path: str, host: Optional[str] = None, method: str = "GET",
        address: str = "127.0.0.1", headers: Optional[Dict[str, str]] = None) -> Tuple[int, object]:
    """(status, parsed JSON or text) of one request; `host` overrides the Host header."""
    status, body, _ = request(port, path, host, method, address, headers)
    return status, body


def request(port: int, path: str, host: Optional[str] = None, method: str = "GET", address: str = "127.0.0.1",
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, object, http.client.HTTPMessage]:
    """`get`, with the response's headers too."""
    conn = http.client.HTTPConnection(address, port, timeout=15)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        kind = response.headers.get("Content-Type", "")
        return (response.status, json.loads(body) if kind.startswith("application/json") else body.decode(),
                response.headers)
    finally:
        conn.close()
