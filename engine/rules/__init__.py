"""The pure rule core: loading, criteria, operators, templates, the rule index.

No I/O beyond reading the files it is given; no store, network or processes.
"""

from __future__ import annotations

from engine.rules import kvlookup  # noqa: F401  registers decrypt_kv before rules load
from engine.rules.index import RuleEvaluation, RuleSet
from engine.rules.loader import load_rule, load_rules
from engine.rules.render import action_context_for, render_parameters
from engine.rules.rule import Evaluation, Rule

__all__ = [
    "Evaluation",
    "Rule",
    "RuleEvaluation",
    "RuleSet",
    "action_context_for",
    "load_rule",
    "load_rules",
    "render_parameters",
]
