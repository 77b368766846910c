"""A loopback TCP forwarder the tests control, to cut a client off from a server.

`TcpProxy(("127.0.0.1", 5432)).start()` listens on 127.0.0.1:`port` and forwards every
connection to the target. `cut()` closes every open connection (both ends) and closes the
listener, so new connections are refused; `restore()` listens again on the same port.
`blackhole()` is the nastier partition: the open connections stay open but carry nothing any
more (no FIN, no RST: what a dead host or a NAT that forgot them looks like), while new
connections work.

The port is picked below the kernel's ephemeral range, so no outgoing connection of this machine
can be holding it when `restore()` binds it again.

Both sockets of a forwarded connection set TCP_NODELAY, as a proxy in front of Redis usually
does (Envoy and twemproxy do). Without it, Nagle's algorithm holds the second part of an answer
until the client acknowledges the first, which the client delays up to 40 ms: measured here,
about one pipeline in eight waited 40-48 ms, and a daemon's catch-up behind the proxy took five
times as long as with it (35 s against 6 s): a stall of this forwarder, not of the connector.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import threading
import time
from pathlib import Path

_BUFFER = 65536
_POLL_S = 0.05


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_outside_ephemeral_range() -> socket.socket:
    high = _ephemeral_low() - 1
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(min(20000, high - 1000), high)
        with contextlib.suppress(OSError):
            return _listener(port)
    return _listener(0)


class _Pipe:
    """One forwarded connection: a thread copies bytes both ways until either side closes or
    the proxy cuts it. The thread owns (and closes) both sockets."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.closing = threading.Event()
        self.stalled = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tcp-proxy-pipe", daemon=True)

    def kill(self) -> None:
        self.closing.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            try:
                self.upstream = socket.create_connection(self.proxy.target, timeout=5)
            except OSError:
                return
            self.upstream.settimeout(None)
            for sock in (self.client, self.upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.closing.is_set():
                return
            self._pump(self.client, self.upstream)
        finally:
            for sock in (self.client, self.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            self.proxy._forget(self)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        while not self.closing.is_set():
            if self.stalled.is_set():  # leave the bytes unread: nothing moves either way
                self.closing.wait(_POLL_S)
                continue
            try:
                readable, _, _ = select.select([a, b], [], [], _POLL_S)
                for sock in readable:
                    data = sock.recv(_BUFFER)
                    if not data:
                        return
                    peer[sock].sendall(data)
            except (OSError, ValueError):
                return


class TcpProxy:
    """A threaded TCP forwarder on 127.0.0.1 with `cut()` and `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0  # connections forwarded
        self.dropped = 0  # open connections closed by cut()
        self.stalled = 0  # open connections stalled by blackhole()
        self.cuts = 0
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._cut = False
        self._accepting: threading.Thread | None = None
        self._stop_accepting = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> TcpProxy:
        sock = _bind_outside_ephemeral_range()
        self.port = sock.getsockname()[1]
        self._serve(sock)
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- faults

    def cut(self) -> int:
        """Close every open connection and refuse new ones; returns how many were open."""
        self._stop_listening()
        with self._lock:
            self._cut = True
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.kill()
        for pipe in pipes:
            pipe.thread.join(5)
        self.cuts += 1
        self.dropped += len(pipes)
        return len(pipes)

    def blackhole(self) -> int:
        """Open connections stop carrying bytes, silently and for good (until `cut()` or
        `close()`); new connections are forwarded. Returns how many were stalled."""
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.stalled.set()
        self.stalled += len(pipes)
        return len(pipes)

    def restore(self, timeout_s: float = 10.0) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            self._cut = False
        if self._accepting is not None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = _listener(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._serve(sock)

    def close(self) -> None:
        self.cut()

    # ----------------------------------------------------------------- internals

    def _serve(self, listener: socket.socket) -> None:
        self._stop_accepting = threading.Event()
        self._accepting = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._stop_accepting),
            name="tcp-proxy-accept",
            daemon=True,
        )
        self._accepting.start()

    def _stop_listening(self) -> None:
        if self._accepting is not None:
            self._stop_accepting.set()
            self._accepting.join(5)
            self._accepting = None

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        """Owns the listening socket: closing it here (not from another thread) is safe."""
        try:
            while not stop.is_set():
                readable, _, _ = select.select([listener], [], [], _POLL_S)
                if not readable:
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                self._open(client)
        finally:
            listener.close()

    def _open(self, client: socket.socket) -> None:
        pipe = _Pipe(self, client)
        with self._lock:
            if self._cut:
                client.close()
                return
            self._pipes.add(pipe)
            self.accepted += 1
        pipe.thread.start()

    def _forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)
