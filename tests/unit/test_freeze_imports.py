"""learner.scoring.freeze_imports: the garbage collector leaves what existed at the call
alone for good, still collects what is made after it, freezes once, and keeps its hands off
a process that froze its own heap. Each case runs in a process of its own: a freeze is for
the life of a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_what_exists_is_frozen_once_and_later_garbage_is_still_collected():
    out = run("""
        import gc
        from learner.scoring import freeze_imports

        assert gc.get_freeze_count() == 0
        assert freeze_imports() is True
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert freeze_imports() is False and gc.get_freeze_count() == frozen

        class Cycle:
            def __init__(self, flag):
                self.me, self.flag = self, flag

            def __del__(self):
                self.flag.append(True)

        gone = []
        Cycle(gone)
        gc.collect()
        print(gone)
    """)
    assert out == "[True]"


def test_a_process_that_froze_its_heap_keeps_it_as_it_was():
    out = run("""
        import gc
        from learner.scoring import freeze_imports

        gc.freeze()
        frozen = gc.get_freeze_count()
        print(freeze_imports(), gc.get_freeze_count() == frozen)
    """)
    assert out == "False True"
