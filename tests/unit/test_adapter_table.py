"""The engines' shared bookkeeping of resident adapters and the requests using them."""

from __future__ import annotations

import pytest

from serving.engines.adapter_table import AdapterTable
from serving.errors import AdapterBusy, AdapterNotLoaded


def test_an_adapter_in_use_cannot_be_detached_until_every_claim_is_released():
    table: AdapterTable[str] = AdapterTable()
    table.add("v1", "peft-1")
    assert table.claim(None) is None  # the base model needs no claim
    assert table.claim("v1") == table.claim("v1") == "peft-1"
    with pytest.raises(AdapterBusy, match="used by 2 running request"):
        table.detach("v1")
    table.release("v1")
    with pytest.raises(AdapterBusy, match="used by 1 running request"):
        table.detach("v1")
    table.release("v1")
    table.release("v1")  # an extra release never goes below zero
    assert table.detach("v1") == "peft-1"
    assert "v1" not in table and len(table) == 0


def test_unknown_versions_are_named_with_what_is_loaded():
    table: AdapterTable[str] = AdapterTable()
    table.add("b", "2")
    table.add("a", "1")
    assert table.versions() == ["a", "b"] and table.handles() == {"a": "1", "b": "2"}
    with pytest.raises(AdapterNotLoaded, match=r"'zz' is not loaded; loaded: \['a', 'b'\]"):
        table.claim("zz")
    with pytest.raises(AdapterNotLoaded, match="'zz' is not loaded"):
        table.detach("zz")
    table.clear()
    assert table.versions() == []
