"""A TCP forwarder in front of a real server: the network between the app and a store.

``down()`` closes the listening socket and every open connection, as when the
server's host drops off the network: clients see their connections end and new
ones refused. ``up()`` listens again on the same port. ``cut()`` is both, with
``up()`` in a ``finally`` (the stores are shared by every test of a session).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0  # chosen by the first bind, kept for every later up()
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.connections: set[socket.socket] = set()
        self.up()

    def up(self) -> None:
        with self.lock:
            if self.listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            connections, self.connections = self.connections, set()
        for sock in ([listener] if listener else []) + list(connections):
            _close(sock)

    @contextlib.contextmanager
    def cut(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # down(): the listening socket was closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self.lock:
                live = self.listener is listener
                if live:
                    self.connections |= {client, upstream}
            if not live:  # went down while this one was connecting
                _close(client)
                _close(upstream)
                return
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.connections -= {src, dst}
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked in accept() or recv()
    sock.close()
