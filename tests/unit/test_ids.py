"""Identifiers: ObjectId-shaped, unique, and consecutive within one process."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading

from engine.model.records import new_id

OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def test_ids_are_object_id_shaped_and_carry_the_second():
    made = new_id(now=0x65A0B1C2)
    assert OBJECT_ID.fullmatch(made)
    assert made.startswith("65a0b1c2")


def test_ids_made_one_after_the_other_in_one_second_are_in_order():
    # Consecutive ids keep index inserts at the right edge of each B-tree; only the
    # 3-byte counter wrapping (once in 16.7 million ids) may break the order once.
    ids = [new_id(now=1_800_000_000) for _ in range(1000)]
    assert len(set(ids)) == 1000
    breaks = sum(1 for a, b in itertools.pairwise(ids) if b <= a)
    assert breaks <= 1
    assert len({i[8:18] for i in ids}) == 1  # one process part


def test_threads_never_get_the_same_id():
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_id(now=1_800_000_000) for _ in range(5000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for into in made for i in into]
    assert len(set(every)) == len(every) == 20000


# One os.write per id: print() may write the id and its newline apart, and parent and child
# writing at once then interleave their lines.
FORKING = """
import os
from engine.model.records import new_id
os.write(1, (new_id(now=1_800_000_000) + "\\n").encode())
pid = os.fork()
os.write(1, (new_id(now=1_800_000_000) + "\\n").encode())
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_child_makes_ids_of_its_own():
    # In a fresh interpreter: forking the test process itself (threads and all) is unsafe.
    done = subprocess.run(
        [sys.executable, "-c", FORKING], capture_output=True, text=True, check=True, timeout=30
    )
    ids = done.stdout.split()
    assert len(ids) == 3 and all(OBJECT_ID.fullmatch(i) for i in ids)
    assert len({i[8:18] for i in ids}) == 2  # the child's process part differs
