"""A slow link on loopback: a TCP relay whose answers (target -> client) are rate-limited.

Put in front of a docker-registry, it makes a cold blob download last as long as a test needs
(e.g. to stop edgecache in the middle of one) without touching the registry or edgecache.
Requests (client -> target) pass unthrottled. `set_rate(None)` lifts the limit at any time.

Bounded: one thread per direction per connection, at most `MAX_CONNECTIONS` connections, every
socket operation has a timeout, and `close()` shuts every socket and joins every thread with a
timeout. Only loopback targets are accepted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time

MAX_CONNECTIONS = 64
CHUNK = 16 * 1024


class ThrottledRelay:
    def __init__(self, target_port: int, rate: float | None,
                 target_host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"only loopback targets: {target_host}")
        self._target = (target_host, target_port)
        self._rate = rate  # bytes per second, None for no limit
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._pumping: dict[int, int] = {}  # connection -> pumps still running
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.relayed = 0  # bytes sent to clients so far
        self._start(self._accept)

    def set_rate(self, rate: float | None) -> None:
        with self._lock:
            self._rate = rate

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                too_many = len(self._pumping) >= MAX_CONNECTIONS
            if too_many:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(0.5)
            pair = [client, upstream]
            with self._lock:
                self._sockets += pair
                self._pumping[id(client)] = 2
            self._start(self._pump, client, upstream, False, pair)
            self._start(self._pump, upstream, client, True, pair)

    def _pump(self, source: socket.socket, sink: socket.socket, throttled: bool,
              pair: list[socket.socket]) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    data = source.recv(CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                with self._lock:
                    rate = self._rate if throttled else None
                started = time.monotonic()
                view = memoryview(data)
                while view and not self._stopped.is_set():
                    try:
                        sent = sink.send(view)
                    except TimeoutError:
                        continue
                    view = view[sent:]
                if throttled:
                    with self._lock:
                        self.relayed += len(data)
                if rate:
                    self._stopped.wait(max(0.0, len(data) / rate - (time.monotonic() - started)))
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:  # the second pump to end closes the connection's sockets
                self._pumping[id(pair[0])] -= 1
                last = self._pumping[id(pair[0])] == 0
                if last and not self._stopped.is_set():
                    del self._pumping[id(pair[0])]
                    self._sockets = [s for s in self._sockets if s not in pair]
            if last and not self._stopped.is_set():
                for sock in pair:
                    sock.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()
