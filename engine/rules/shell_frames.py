"""The shell lexer's stack: one frame per open construct, and what each is called.

engine.rules.shell_lexer reads sh text with a stack of frames: the command level (the
top, $(...), <(...)), quotes, and expansions (${...}, $((...)), backticks, $'...'). A
command-level frame also holds the simple command being read, which is what decides
whether a value may go there.
"""

from __future__ import annotations

# Beyond these the text is treated as unknowable rather than followed further.
MAX_FRAMES = 16
WORD_CAP = 48
DYNAMIC, OVERFLOW = "\x00", "\x01"

# Frames of the lexer's stack and how a refusal names them.
TOP, DQ, SQ = "top", "dq", "sq"
CMDSUB, PROCSUB, BACKTICK = "cmdsub", "procsub", "backtick"
PARAM, ARITH, ARITH_CMD, ANSI = "param", "arith", "arith_cmd", "ansi"
FRAME_CONTEXTS = {
    CMDSUB: "inside a command substitution $(...)",
    PROCSUB: "inside a process substitution <(...)",
    BACKTICK: "inside a backtick command substitution `...`",
    PARAM: "inside a parameter expansion ${...}",
    ARITH: "inside an arithmetic expansion $((...))",
    ARITH_CMD: "inside an arithmetic command ((...))",
    ANSI: "inside $'...' quotes",
}


class Frame:
    """One open construct on the lexer's stack (its `kind`), and, at a command level, the
    simple command being read: its current word, whether the next word names the
    command, what re-parsing or piping was seen."""

    __slots__ = ("after_wrapper", "candidate", "comment", "depth", "dynamic_command",
                 "heredocs", "kind", "piped", "redirect", "reshell", "word")  # fmt: skip

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.depth = 0  # open ( inside $(...) / $((...))
        # The current word's literal text (quotes removed, DYNAMIC where text is expanded
        # or inserted, OVERFLOW once too long to matter); None between words.
        self.word: str | None = None
        self.comment = False
        self.candidate = True  # the next word names the command
        self.after_wrapper = False
        self.redirect = False  # the current word is a redirection's target
        self.reshell: str | None = None  # a re-parsing command seen in this simple command
        self.dynamic_command = False  # this simple command's name is not literal
        self.heredocs: tuple[tuple[str, bool], ...] = ()  # (delimiter, strip tabs) to read
        self.piped = False  # this simple command reads the previous one's output (after |)

    def copy(self) -> Frame:
        other = Frame.__new__(Frame)
        for name in Frame.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in Frame.__slots__)


def append(frame: Frame, text: str) -> None:
    """Add `text` to the frame's current word, which stops growing past WORD_CAP."""
    word = frame.word or ""
    if not word.endswith(OVERFLOW):
        word += text
        frame.word = word if len(word) <= WORD_CAP else word[:WORD_CAP] + OVERFLOW
