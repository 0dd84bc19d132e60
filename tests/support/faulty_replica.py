"""An LLM replica class whose engine steps can be slowed or made to never return.

:meth:`FaultyServer.hang_engine` replaces the model's ``forward`` with one that
waits on a ``threading.Event`` nobody sets: the hf worker's next step blocks
forever inside the forward pass, as a stuck kernel or a deadlock would, while
the replica's event loop (and so Serve's health check) keeps running.
:meth:`FaultyServer.slow_engine` makes every forward pass take a while longer,
so a stream stays open long enough to stop its replica under it.
"""

from __future__ import annotations

import threading
import time

from serving.app import LLMServer


class FaultyServer(LLMServer):
    def _wrap_forward(self, before) -> str:
        model = self.engine._model
        forward = model.forward

        def wrapped(*args, **kwargs):
            before()
            return forward(*args, **kwargs)

        model.forward = wrapped
        return self.replica_id

    async def hang_engine(self) -> str:
        """Every later forward pass blocks forever; returns this replica's id."""
        return self._wrap_forward(threading.Event().wait)

    async def slow_engine(self, seconds: float) -> str:
        """Every later forward pass takes ``seconds`` longer; returns this replica's id."""
        return self._wrap_forward(lambda: time.sleep(seconds))
