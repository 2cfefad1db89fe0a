"""A conservative lexer of sh source: which context a position of a command is in.

It reads shell command text character by character, as sh would, far enough to say where a
value inserted at the current position would land: a plain word or inside "..."/'...' at
the top level of the command (contexts a quoter knows), or somewhere else — inside
$(...), backticks, ${...}, $((...)), a here-document, a comment, after a backslash or $,
in the arguments of a command that hands them to another shell. What it cannot follow
with certainty (case inside $(...), quotes inside backticks, $'\\'' ...) makes it
*unknown* for the rest of the text, which refuses every later value. Pure.
"""

from __future__ import annotations

import re

from engine.rules.shell_commands import ASSIGNMENT, read_command_word
from engine.rules.shell_frames import (
    ANSI,
    ARITH,
    ARITH_CMD,
    BACKTICK,
    CMDSUB,
    DQ,
    DYNAMIC,
    FRAME_CONTEXTS,
    MAX_FRAMES,
    PARAM,
    PROCSUB,
    SQ,
    TOP,
    Frame,
    append,
)

__all__ = ["DOUBLE", "SINGLE", "WORD", "ShellLexer"]

#: How an accepted value is quoted: a word of its own, inside "...", inside '...'.
WORD, DOUBLE, SINGLE = "word", "double", "single"

_HEREDOC_DELIMITER = re.compile(r"[A-Za-z0-9_.-]+")


# --- the lexer: one concrete reading of the shell source so far --------------------


class ShellLexer:
    """sh's view of the text so far; ``unknown`` (a reason) once it cannot be followed."""

    __slots__ = (
        "delimiter", "escape", "feeds_code", "frames", "heredoc", "line", "pending", "unknown"
    )  # fmt: skip

    def __init__(self) -> None:
        self.frames: list[Frame] = [Frame(TOP)]
        self.pending = ""  # a character whose meaning depends on the next one
        self.escape = False  # the previous character was an unquoted backslash
        self.unknown: str | None = None
        self.delimiter: str | None = None  # reading a here-document delimiter word
        # Reading a here-document body: (delimiter, strip tabs); `line` is the current
        # line while it can still be the delimiter, else None.
        self.heredoc: tuple[tuple[str, bool], ...] = ()
        self.line: str | None = ""
        # A command that runs its stdin as code, fed by a pipe or a process substitution:
        # every value of the template is refused (engine.rules.shell_quoting).
        self.feeds_code: str | None = None

    def copy(self) -> ShellLexer:
        other = ShellLexer.__new__(ShellLexer)
        other.frames = [frame.copy() for frame in self.frames]
        other.pending, other.escape, other.unknown = self.pending, self.escape, self.unknown
        other.delimiter, other.heredoc, other.line = self.delimiter, self.heredoc, self.line
        other.feeds_code = self.feeds_code
        return other

    def key(self) -> tuple:
        if self.unknown is not None:
            return ("unknown", self.unknown)
        frames = tuple(frame.key() for frame in self.frames)
        return (
            frames, self.pending, self.escape, self.delimiter, self.heredoc, self.line,
            self.feeds_code,
        )  # fmt: skip

    # -- helpers

    @property
    def frame(self) -> Frame:
        return self.frames[-1]

    def give_up(self, reason: str) -> None:
        if self.unknown is None:
            self.unknown = reason

    def push(self, kind: str) -> None:
        if len(self.frames) >= MAX_FRAMES:
            self.give_up("after shell constructs nested too deeply to follow")
            return
        if kind not in (DQ, SQ):
            self.mark_dynamic()
        self.frames.append(Frame(kind))

    def word_frame(self) -> Frame | None:
        """The command-level frame the current text is a word of (None inside expansions)."""
        for frame in reversed(self.frames):
            if frame.kind in (TOP, CMDSUB, PROCSUB):
                return frame
            if frame.kind not in (DQ, SQ):
                return None
        return None

    def add_literal(self, char: str) -> None:
        frame = self.word_frame()
        if frame is not None:
            append(frame, char)

    def mark_dynamic(self) -> None:
        """The current word holds expanded or inserted text (marked by a NUL in it)."""
        for frame in reversed(self.frames):
            if frame.kind in (TOP, CMDSUB, PROCSUB):
                append(frame, DYNAMIC)
                return

    # -- feeding text

    def feed(self, text: str) -> None:
        for char in text:
            if self.unknown is not None:
                return
            self.step(char)

    def step(self, char: str) -> None:
        if char == "\n" and len(self.frames) > 1 and self.frames[0].heredocs:
            self.give_up("after a here-document whose body starts inside another construct")
            return
        if self.heredoc:
            self.heredoc_char(char)
            return
        if self.delimiter is not None:
            self.delimiter_char(char)
            return
        if self.pending:
            pending, self.pending = self.pending, ""
            if self.resolve(pending, char):
                return
        kind = self.frame.kind
        if kind in (TOP, CMDSUB, PROCSUB):
            self.command_char(char)
        elif kind == DQ:
            self.double_char(char)
        elif kind == SQ:
            if char == "'":
                self.frames.pop()
            else:
                self.add_literal(char)
        elif kind == ANSI:
            self.ansi_char(char)
        elif kind == PARAM:
            self.param_char(char)
        elif kind in (ARITH, ARITH_CMD):
            self.arith_char(char)
        else:
            self.backtick_char(char)

    def resolve(self, pending: str, char: str) -> bool:
        """Settle a pending character given the next one; True if `char` was consumed."""
        frame = self.frame
        if pending == "$":
            if char == "(":
                self.pending = "$("
                return True
            if char == "{":
                self.push(PARAM)
                return True
            if char == "[":
                self.give_up("after a $[...] expansion")
                return True
            if frame.kind != DQ and char == "'":
                self.push(ANSI)
                return True
            if frame.kind != DQ and char == '"':
                self.push(DQ)  # $"..." (bash locale string) is read as "..."
                return True
            self.mark_dynamic()  # $name, $1, $?, or a literal $
            return False
        if pending == "$(":
            if char == "(":
                self.push(ARITH)
                return True
            self.push(CMDSUB)
            return False
        if pending == "(":
            if char == "(":
                if frame.kind != TOP:
                    frame.depth -= 1  # the first ( opened this, not a subshell
                self.push(ARITH_CMD)
                return True
            return False
        if pending == ")":
            if char == ")":
                self.frames.pop()
                return True
            self.give_up("after a ')' that may or may not close $((...))")
            return True
        if pending == "<":
            if char == "<":
                self.pending = "<<"
                return True
            if char == "(":
                self.push(PROCSUB)
                return True
            return char in "&>"
        if pending == ">":
            if char == "(":
                self.push(PROCSUB)
                return True
            return char in ">&|"
        if pending == "<<":
            if char == "<":
                return True  # <<< here-string: the next word is an ordinary word
            self.start_heredoc(strip_tabs=char == "-")
            if char == "-":
                return True
            self.delimiter_char(char)
            return True
        if pending == "&":
            if char == ">":
                return True  # &> redirection: the simple command goes on
            self.end_command(frame)
            return False
        return False

    # -- command level: the top, $(...), <(...)

    def command_char(self, char: str) -> None:
        frame = self.frame
        if frame.comment:
            if char == "\n":
                frame.comment = False
                self.newline(frame)
            return
        if self.escape:
            self.escape = False
            if char != "\n":
                self.add_literal(char)
            return
        if char == "\\":
            self.escape = True
            if frame.word is None:
                frame.word = ""
            return
        if char in " \t":
            self.end_word(frame)
        elif char == "\n":
            self.end_word(frame)
            self.newline(frame)
        elif char in ";|":
            self.end_word(frame)
            # `||` (a second | where a command name was due) does not feed its stdin.
            or_list = char == "|" and frame.piped and frame.candidate and frame.kind == TOP
            self.end_command(frame)
            frame.piped = char == "|" and not or_list
        elif char == "&":
            self.end_word(frame)
            if frame.piped and frame.candidate and frame.kind == TOP:
                return  # |& (bash): a pipe of stdout and stderr, still a pipe
            self.pending = "&"
        elif char == "(":
            starts_word = frame.word is None
            if frame.piped and frame.candidate and starts_word and frame.kind == TOP:
                self.feeds_code = self.feeds_code or "a compound command (( ... ))"
            self.end_word(frame)
            self.end_command(frame)
            if frame.kind != TOP:
                frame.depth += 1
            if starts_word:
                self.pending = "("
        elif char == ")":
            self.end_word(frame)
            self.end_command(frame)
            if frame.kind != TOP:
                if frame.depth:
                    frame.depth -= 1
                else:
                    self.frames.pop()
        elif char in "<>":
            if frame.word is not None and frame.word.isdigit():
                frame.word = None  # 2>file: the digits name a descriptor
            self.end_word(frame)
            frame.redirect = True
            self.pending = char
        elif char == "'":
            self.begin_word(frame)
            self.push(SQ)
        elif char == '"':
            self.begin_word(frame)
            self.push(DQ)
        elif char == "`":
            self.push(BACKTICK)
        elif char == "$":
            self.begin_word(frame)
            self.pending = "$"
        elif char == "#" and frame.word is None:
            if frame.kind != TOP:
                self.give_up("after a comment inside a command substitution")
            frame.comment = True
        else:
            self.add_literal(char)

    def begin_word(self, frame: Frame) -> None:
        if frame.word is None:
            frame.word = ""

    def end_word(self, frame: Frame) -> None:
        word = frame.word
        if word is None:
            return
        frame.word = None
        if frame.redirect:
            frame.redirect = False
            return
        feeds_code, unknown = read_command_word(frame, word)
        if feeds_code is not None:
            self.feeds_code = self.feeds_code or feeds_code
        if unknown is not None:
            self.give_up(unknown)

    def end_command(self, frame: Frame) -> None:
        frame.candidate = True
        frame.after_wrapper = False
        frame.redirect = False
        frame.reshell = None
        frame.dynamic_command = False
        frame.piped = False

    def newline(self, frame: Frame) -> None:
        self.end_command(frame)
        if frame.heredocs:
            self.heredoc, frame.heredocs = frame.heredocs, ()
            self.line = ""

    # -- here-documents

    def start_heredoc(self, strip_tabs: bool) -> None:
        if self.frame.kind != TOP:
            self.give_up("after a here-document inside a command substitution")
            return
        self.delimiter = "-" if strip_tabs else ""

    def delimiter_char(self, char: str) -> None:
        text = self.delimiter or ""
        strip_tabs, word = text.startswith("-"), text[1:] if text.startswith("-") else text
        if char in " \t" and not word:
            return
        if char in " \t\n;&|<>()":
            bare = word.replace("'", "").replace('"', "").replace("\\", "")
            if not _HEREDOC_DELIMITER.fullmatch(bare) or word.count("'") % 2 or word.count('"') % 2:
                self.give_up("after a here-document whose delimiter cannot be followed")
                return
            frame = self.frame
            frame.heredocs = (*frame.heredocs, (bare, strip_tabs))
            self.delimiter = None
            frame.redirect = False
            self.step(char)
            return
        self.delimiter = ("-" if strip_tabs else "") + word + char
        if len(word) > 256:
            self.give_up("after a here-document whose delimiter cannot be followed")

    def heredoc_char(self, char: str) -> None:
        delimiter, strip_tabs = self.heredoc[0]
        continued, self.escape = self.escape, char == "\\"
        if char == "\n" and continued:
            self.give_up("after a here-document line continued with a backslash")
            return
        if char != "\n":
            if self.line is not None:
                if strip_tabs and char == "\t" and not self.line:
                    return
                line = self.line + char
                self.line = line if delimiter.startswith(line) else None
            return
        if self.line == delimiter:
            self.heredoc = self.heredoc[1:]
        self.line = ""

    # -- quotes and expansions

    def double_char(self, char: str) -> None:
        if self.escape:
            self.escape = False
            self.add_literal(char)
        elif char == "\\":
            self.escape = True
        elif char == '"':
            self.frames.pop()
        elif char == "$":
            self.pending = "$"
        elif char == "`":
            self.push(BACKTICK)
        else:
            self.add_literal(char)

    def ansi_char(self, char: str) -> None:
        if self.escape:
            self.escape = False
            if char == "'":
                self.give_up("after $'...' quotes that shells read differently")
        elif char == "\\":
            self.escape = True
        elif char == "'":
            self.frames.pop()

    def param_char(self, char: str) -> None:
        if self.escape:
            self.escape = False
        elif char == "\\":
            self.escape = True
        elif char == "}":
            self.frames.pop()
        elif char == "'":
            if any(frame.kind == DQ for frame in self.frames):
                self.give_up("after quotes inside ${...} inside double quotes")
            else:
                self.push(SQ)
        elif char == '"':
            self.push(DQ)
        elif char == "$":
            self.pending = "$"
        elif char == "`":
            self.push(BACKTICK)

    def arith_char(self, char: str) -> None:
        frame = self.frame
        if char == "(":
            frame.depth += 1
        elif char == ")":
            if frame.depth:
                frame.depth -= 1
            else:
                self.pending = ")"
        elif char == "$":
            self.pending = "$"
        elif char == "`":
            self.push(BACKTICK)
        elif char in "'\"\\":
            self.give_up("after quotes inside an arithmetic expression")

    def backtick_char(self, char: str) -> None:
        if self.escape:
            self.escape = False
        elif char == "\\":
            self.escape = True
        elif char == "`":
            self.frames.pop()
        elif char in "'\"#(":
            # Quotes, comments and $(...) inside `...` are read differently by shells.
            self.give_up("after a backtick command substitution that cannot be followed")

    # -- a value-inserting {{ }} here

    def site(self) -> tuple[str | None, str | None]:
        """(quoting, None) where a value can go here, else (None, why not); moves past it."""
        if self.unknown is not None:
            return None, f"{self.unknown} (the shell context is unknown there)"
        if self.heredoc:
            self.line = None
            return None, "in a here-document body"
        if self.delimiter is not None:
            self.give_up("after a here-document whose delimiter is a template value")
            return None, "in a here-document delimiter"
        pending, self.pending = self.pending, ""
        if pending == "$":
            self.mark_dynamic()
            return None, "directly after a $ (the value would become part of an expansion)"
        if pending == "$(":
            self.push(CMDSUB)
        elif pending == "<<":
            self.give_up("after a here-document whose delimiter is a template value")
            return None, "in a here-document delimiter"
        elif pending == ")":
            self.give_up("after a ')' that may or may not close $((...))")
            return None, "inside an arithmetic expansion $((...))"
        elif pending == "&":
            self.end_command(self.frame)
        if self.escape:
            self.escape = False
            self.mark_dynamic()
            return None, "directly after a backslash"
        if self.frame.comment:
            return None, "in a comment"
        for frame in reversed(self.frames):
            if frame.kind in FRAME_CONTEXTS:
                self.mark_dynamic()
                return None, FRAME_CONTEXTS[frame.kind]
        top = self.frames[0]
        prior = top.word or ""
        self.begin_word(top)
        self.mark_dynamic()
        if (
            top.candidate
            and not top.after_wrapper
            and not top.redirect
            and not ASSIGNMENT.match(prior)
        ):
            # One quoted word, but the word that picks the program: `{{ x }} /data` runs
            # whatever x names (reboot, a script the sender planted).
            return None, "where the command name stands (the value would choose the program)"
        if top.reshell is not None:
            return None, f"in the arguments of {top.reshell} (another shell parses them again)"
        if top.dynamic_command:
            return None, (
                "in the arguments of a command whose name is not literal (it may be a shell "
                "that parses them again)"
            )
        return {TOP: WORD, DQ: DOUBLE, SQ: SINGLE}[self.frame.kind], None
