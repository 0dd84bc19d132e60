"""Broken servers on a real socket, for the failures a fake client could not show.

* :class:`Hangup` accepts each connection and closes it at once (a server
  that dies under its clients);
* :class:`Silent` lets clients connect and never answers (a hung server: only
  the client's timeouts end a call).

Both count the connections clients made, which is how a test sees whether a
client retried behind its caller's back.
"""

from __future__ import annotations

import socket
import threading


class _Listener:
    """A TCP socket listening on 127.0.0.1 (a free port)."""

    password = "s3cret"  # in the URL, so tests can check it never reaches a log

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hangup(_Listener):
    """Accepts each connection and closes it at once; ``accepted`` counts them.

    The count is raised before the close, so once a client has seen its
    connection closed, the count includes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


class Silent(_Listener):
    """Lets clients connect (the kernel completes the handshake) and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[socket.socket] = []

    @property
    def accepted(self) -> int:
        """Connections made so far: those already taken plus those waiting in the backlog."""
        self.sock.setblocking(False)
        try:
            while True:
                self._held.append(self.sock.accept()[0])
        except BlockingIOError:
            pass
        return len(self._held)

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        super().close()
