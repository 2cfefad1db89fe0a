"""What a word of a simple command means: the command's name, a wrapper, a shell again.

Some commands parse their arguments as shell code again (sh -c, eval, ssh, sudo), some
run what they read on stdin as code (sh, python, xargs), some run their later arguments
as a command (env, nohup, timeout, find -exec). `read_command_word` takes each finished
word into the simple command being read, and engine.rules.shell_lexer refuses a value
that would land where one of these hands it to a shell. The lists are conservative: a
command missing from them is a value let through that should not be, so add, do not trim.
"""

from __future__ import annotations

import re

from engine.rules.shell_frames import DYNAMIC, OVERFLOW, PROCSUB, TOP, Frame

# Commands that parse (some of) their arguments as shell code again, or hand them to a
# shell elsewhere. A value after one of these in the same simple command is refused. The
# first set counts anywhere in the command (docker exec c sh -c ..., find -exec sh -c),
# the second (ordinary words too) only where a command name stands.
RESHELLING_ANYWHERE = frozenset(
    {
        "sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "posh", "rbash",
        "busybox", "fish", "csh", "tcsh", "eval", "ssh", "su", "runuser", "sudo", "doas",
    }
)  # fmt: skip
RESHELLING_COMMANDS = frozenset(
    {"trap", "watch", "alias", "script", "parallel", "let", "flock", "tmux", "screen", "at",
     "batch", "sg", "source", "."}
)  # fmt: skip
# Commands that run what they read on stdin as code (or as commands): a value anywhere
# upstream of one in a pipeline (`echo {{ x }} | sh`), or written into a process
# substitution that runs one (`tee >(bash)`), would run. Followed as command names only.
STDIN_CODE_READERS = RESHELLING_ANYWHERE | frozenset(
    {
        "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua",
        "tclsh", "wish", "pwsh", "osascript", "xargs", "at", "batch", "source", ".",
    }
)  # fmt: skip
# Compound commands: one after a pipe runs its inner commands on the piped stdin
# (`| (sh)`, `| while read l; do eval "$l"; done`), which is not followed: refused.
COMPOUND_OPENERS = frozenset({"{", "while", "until", "if", "for", "case", "select"})
# find's options whose next word is a command name.
EXEC_OPTIONS = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
# Commands that run their (later) arguments as a command: the word after one is a command
# name again, so a value-derived word there makes the command unknown.
WRAPPERS = frozenset(
    {
        "env", "exec", "command", "builtin", "nohup", "nice", "ionice", "timeout", "time",
        "stdbuf", "setsid", "chrt", "taskset", "flock", "unbuffer", "xargs", "chroot",
        "strace", "ltrace", "then", "do", "else", "elif", "if", "while", "until", "!", "{",
    }
)  # fmt: skip
# NAME=value: an assignment before the command name, not the name.
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def read_command_word(frame: Frame, word: str) -> tuple[str | None, str | None]:
    """Take a finished word (not a redirection's target) into the simple command `frame`
    is reading: does it name the command, a wrapper, a shell that parses its arguments
    again? Returns (the command that runs piped code, when this word is one: every value
    is then refused; why the text cannot be followed from here, or None)."""
    feeds_code: str | None = None
    unknown: str | None = None
    name = word.rsplit("/", 1)[-1]
    literal = DYNAMIC not in name and OVERFLOW not in name
    if frame.kind != TOP:
        if word == "case":
            unknown = "after a case statement inside a command substitution"
        if frame.kind == PROCSUB and (not literal or name in STDIN_CODE_READERS):
            # >(sh): what the outer command writes there runs (any word: conservative)
            feeds_code = name if literal else "a non-literal command"
        return feeds_code, unknown
    if literal and name in RESHELLING_ANYWHERE:
        frame.reshell = frame.reshell or name
    if literal and name in EXEC_OPTIONS:
        frame.candidate = frame.after_wrapper = True
        return None, None
    if not frame.candidate or ASSIGNMENT.match(word):
        return None, None  # an argument, or NAME=value before the command (or after env)
    if frame.piped and (not literal or name in STDIN_CODE_READERS):
        feeds_code = name if literal else "a non-literal command"
    if frame.piped and literal and name in COMPOUND_OPENERS:
        feeds_code = feeds_code or f"a compound command ({name} ...)"
    if not literal:
        frame.dynamic_command = True
    elif name in RESHELLING_COMMANDS:
        frame.reshell = frame.reshell or name
        if name == "alias":  # any later command name may then be a shell
            unknown = "after an alias definition"
    elif name in WRAPPERS:
        frame.after_wrapper = True
        return feeds_code, unknown
    frame.candidate = frame.after_wrapper
    return feeds_code, unknown
