"""Orquesta workflows (StackStorm's workflow language, spec 1.0): the pure language core.

- `spec`: a definition file read into frozen records (`model`), every problem located.
- `expressions`: ``<% yaql %>`` and ``{{ jinja }}`` evaluated, bounded, against an
  `ExpressionContext` (`context`); `functions` and `yaql_engine` serve it.
- `inspect`: the static checks of ``hookyard workflow inspect``.
- `conductor`: the state machine that decides, from events, which tasks run next.

Nothing here reads files, touches the store or runs actions; the runner builds on it.
"""
