"""Processes seen through /proc, for the tests that watch child processes come and go."""

from __future__ import annotations

from pathlib import Path


def process_state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running (an exited but unreaped process, a zombie, is not)."""
    state = process_state(pid)
    return state is not None and state[0] != "Z"
