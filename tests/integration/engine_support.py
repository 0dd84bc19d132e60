"""Checks that the engine-specific tests share."""

from __future__ import annotations

import contextlib

import pytest

from serving.errors import AdapterLimitReached


@contextlib.asynccontextmanager
async def filled_to_capacity(engine, make_adapter, setting: str):
    """Load ``engine.adapter_capacity`` adapters (``l1``, ``l2``, ...) and check that one
    more is refused, naming ``setting``; yield their names and unload them afterwards."""
    names = [f"l{i}" for i in range(1, engine.adapter_capacity + 1)]
    for i, name in enumerate(names, 1):
        await engine.load_adapter(name, make_adapter(chr(ord("a") + i - 1), seed=i))
    try:
        with pytest.raises(AdapterLimitReached, match=f"{setting}={len(names)}"):
            await engine.load_adapter("over", make_adapter("over", seed=len(names) + 1))
        assert engine.loaded_adapters() == names
        yield names
    finally:
        for name in names:
            await engine.unload_adapter(name)
