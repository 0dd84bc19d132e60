"""A built-in model built once: a second builder says it waits, then uses the first's."""

from __future__ import annotations

import logging
import threading

from loraloop.model_build import build_once, write_marker
from tests.support.waiting import wait_until


def test_a_second_builder_says_it_waits_and_then_finds_the_model(tmp_path, caplog):
    dest = tmp_path / "tiny-v1"
    started, release = threading.Event(), threading.Event()

    def slow_build(staging):
        started.set()
        release.wait(120)
        write_marker(staging, "done.json", {"built": 1})

    outcomes: list = []
    first = threading.Thread(target=build_once, args=(dest, slow_build),
                             kwargs={"marker": "done.json"})
    second = threading.Thread(target=lambda: outcomes.append(build_once(
        dest, lambda _staging: outcomes.append("built twice"), marker="done.json")))
    with caplog.at_level(logging.WARNING, logger="loraloop.model_build"):
        first.start()
        assert started.wait(120)
        second.start()
        wait_until(lambda: "another process is building tiny-v1; waiting" in caplog.text,
                   what="the second builder saying it waits")
        release.set()
        first.join(120)
        second.join(120)
    assert outcomes == [dest] and (dest / "done.json").exists()
