"""Generic test helpers. Tests wait for conditions with :func:`wait_for`, never with fixed sleeps."""

from __future__ import annotations

import functools
import ipaddress
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# `make test` installs or builds every tool a test needs (hack/test-prereqs.sh), so a missing one is a broken setup:
# the test fails and says how to fix it, rather than skipping and silently testing less than CI does.
PREREQS_HINT = "run `make test-prereqs` (or `make test`, which runs it)"


def require_tool(path: str | Path | None, what: str) -> str:
    """The tool's path; an AssertionError naming it and the command that installs it when it is missing."""
    assert path is not None and Path(path).exists(), f"{what} is missing ({path}): {PREREQS_HINT}"
    return str(path)


def needs_tool(path: str | Path | None, what: str) -> Callable[[F], F]:
    """Decorator: the test fails at its start, naming the tool, when the tool is missing."""
    def decorate(test: F) -> F:
        @functools.wraps(test)
        def checked(*args: Any, **kwargs: Any) -> Any:
            require_tool(path, what)
            return test(*args, **kwargs)
        return checked  # type: ignore[return-value]
    return decorate


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Exceptions listed in ``ignore`` count as "not yet" (e.g. a 404 before an object exists). On timeout
    an AssertionError names ``message`` and the last value or exception seen, so a failing test says
    what it was waiting for rather than just "timed out".
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}; last: {last!r}")
        time.sleep(interval)


# Network exposure: which addresses a process listens on (from /proc, no tools needed)


def listening_sockets() -> dict[int, str]:
    """inode -> "address:port" of every listening TCP socket and bound UDP socket (IPv4 and IPv6)."""
    sockets: dict[int, str] = {}
    for table, listening_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == listening_state:
                sockets[inode] = _decode_address(local)
    return sockets


def _decode_address(hex_address: str) -> str:
    address, port = hex_address.split(":")
    raw = bytes.fromhex(address)
    # /proc prints the address as 32-bit words in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{ipaddress.ip_address(words)}:{int(port, 16)}"


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def post_json(url: str, body: Any, timeout: float = 5) -> Any:
    """POST ``body`` as JSON and return the decoded answer (urllib raises on a non-2xx status)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class BackgroundLoop:
    """Calls :meth:`tick` on a daemon thread, ``pause`` seconds apart, while its ``with`` block runs: the live
    traffic (requests, feedback) integration tests send to real servers while they wait on the operator."""

    pause = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.pause)

    def tick(self) -> None:
        raise NotImplementedError
