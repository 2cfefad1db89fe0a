"""Load rule files (StackStorm's format) into compiled Rule objects.

Every error names the file, line and column, the field path and what was expected, with a
suggestion where one exists. Loading a directory reports every error and loads every good
file: one bad file never stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema

from engine.errors import FieldPathError, RuleError, RuleLoadError, RuleLoadErrors, TemplateError
from engine.model.names import MAX_NAME_CHARS, too_long
from engine.rules import fields, operators, regexes, templates
from engine.rules.criteria import Criterion
from engine.rules.index import RuleSet
from engine.rules.rule import BACKSTOP, STANDARD, Rule, normalize_webhook_name
from engine.rules.schema import RULE_KEYS, RULE_VALIDATOR
from engine.rules.trigger_parameters import SYSTEM_PARAMETER_SCHEMAS, parameter_problems
from engine.rules.yamlsource import Located, format_path, parse_yaml, suggestion, type_name
from engine.rules.yamlsource import Path as FieldPath

DEFAULT_PACK = "default"
T = TypeVar("T")
RULE_FILE_SUFFIXES = (".yaml", ".yml")


def load_rule(
    source: Mapping[str, Any] | str | os.PathLike[str],
    *,
    pack: str | None = None,
    origin: str | None = None,
) -> Rule:
    """Load one rule from a dict, a YAML string or a file path.

    `pack` is the default pack (a pack's rules/ folder gives its name); the rule's own
    `pack:` wins. Raises RuleLoadError.
    """
    if isinstance(source, Mapping):
        located = Located(dict(source), {}, origin)
    elif isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.endswith(RULE_FILE_SUFFIXES)
    ):
        file = os.fspath(source)
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleLoadError(f"cannot read rule file: {exc.strerror}", file=file) from None
        except UnicodeDecodeError:
            raise RuleLoadError("rule file is not UTF-8 text", file=file) from None
        located = parse_yaml(text, file)
    elif isinstance(source, str):
        located = parse_yaml(source, origin)
    else:
        raise RuleLoadError(
            f"cannot load a rule from {type(source).__name__}; give a dict, YAML or a path",
            file=origin,
        )
    return build_rule(located, default_pack=pack)


def load_rules(
    *sources: str | os.PathLike[str], pack: str | None = None
) -> tuple[RuleSet, list[RuleLoadError]]:
    """Load every rule file under the given files/directories; returns (ruleset, errors)."""
    rules: list[Rule] = []
    errors: list[RuleLoadError] = []
    for file in iter_rule_files(sources, errors):
        try:
            rules.append(load_rule(Path(file), pack=pack))
        except RuleLoadErrors as exc:
            errors.extend(exc.errors)
        except RuleLoadError as exc:
            errors.append(exc)
    ruleset, duplicate_errors = RuleSet.build(rules)
    return ruleset, errors + duplicate_errors


def iter_rule_files(
    sources: Iterable[str | os.PathLike[str]], errors: list[RuleLoadError]
) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.suffix in RULE_FILE_SUFFIXES and p.is_file())
            )
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleLoadError("no such file or directory", file=str(path)))
    return files


def build_rule(located: Located, *, default_pack: str | None = None) -> Rule:
    """The Rule of a parsed rule file; RuleLoadError with every problem found (each
    located: `RuleLoadErrors.errors` when there are several)."""
    data = located.data
    if not isinstance(data, dict):
        raise located.error(f"a rule file must be a mapping of rule fields, got {type_name(data)}")
    found: list[RuleLoadError] = []
    for key in data:
        if key not in RULE_KEYS:
            found.append(
                located.error(
                    f"unknown rule field {key!r}{suggestion(str(key), RULE_KEYS)}",
                    (key,),
                    at_key=True,
                )
            )
    schema_errors = sorted(
        RULE_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]
    )
    found.extend(_schema_error(located, error) for error in schema_errors)
    # A section the schema refused is not checked further: its shape is unknown.
    broken = {error.absolute_path[0] for error in schema_errors if error.absolute_path}
    sound = {key for key in ("criteria", "trigger", "action", "once_per") if key in data} - broken

    criteria = []
    if "criteria" in sound:
        criteria = _compile_criteria(located, data.get("criteria") or {}, ("criteria",), found)
    trigger = data["trigger"] if "trigger" in sound else {"type": "", "parameters": {}}
    trigger_parameters = trigger.get("parameters") or {}
    if "trigger" in sound:
        _collect(found, _check_trigger, located, trigger)
    action = data["action"] if "action" in sound else {"ref": "", "parameters": {}}
    action_parameters = action.get("parameters") or {}
    if "action" in sound:
        _check_templates(located, action_parameters, ("action", "parameters"), found)
    once_per = None
    if "once_per" in sound:
        once_per = _collect(found, _compile_template, located, data["once_per"], ("once_per",))
    if found:
        found.sort(key=lambda e: (e.line or 0, e.column or 0))
        raise found[0] if len(found) == 1 else RuleLoadErrors(found)

    pack = data.get("pack") or default_pack or DEFAULT_PACK
    line, _ = located.position(())
    return Rule(
        name=data["name"],
        pack=pack,
        trigger_type=trigger["type"],
        trigger_parameters=trigger_parameters,
        action_ref=action["ref"],
        action_parameters=action_parameters,
        criteria=tuple(criteria),
        description=data.get("description"),
        enabled=data.get("enabled", True),
        rule_type=(data.get("type") or {}).get("ref", STANDARD),
        tags=tuple(data.get("tags") or ()),
        context=data.get("context") or {},
        metadata_file=data.get("metadata_file"),
        once_per=once_per,
        source=located.file,
        line=line,
        parameter_lines=_parameter_lines(located, action_parameters, ("action", "parameters")),
        trigger_parameter_lines=_parameter_lines(
            located, trigger_parameters, ("trigger", "parameters")
        ),
    )


def _collect(found: list[RuleLoadError], check: Callable[..., T], *args: Any) -> T | None:
    """`check(*args)`, its RuleLoadError appended to `found` instead of raised."""
    try:
        return check(*args)
    except RuleLoadError as exc:
        found.append(exc)
        return None


def _check_trigger(located: Located, trigger: Mapping[str, Any]) -> None:
    trigger_parameters = trigger.get("parameters") or {}
    if trigger["type"] == "core.st2.webhook" and not str(trigger_parameters.get("url", "")).strip(
        "/"
    ):
        raise located.error(
            "a core.st2.webhook rule needs trigger.parameters.url (the hook name that "
            "/webhooks/<url> answers to)",
            ("trigger", "parameters") if "parameters" in trigger else ("trigger",),
        )
    if trigger["type"] == "core.st2.webhook":
        hook = normalize_webhook_name(str(trigger_parameters.get("url")))
        if len(hook) > MAX_NAME_CHARS:
            raise located.error(
                f"trigger.parameters.url (the hook name) {too_long(len(hook), MAX_NAME_CHARS)}",
                ("trigger", "parameters", "url"),
            )
    _check_system_trigger_parameters(located, trigger)


def _compile_criteria(
    located: Located, spec: Mapping[str, Any], where: FieldPath, found: list[RuleLoadError]
) -> list[Criterion]:
    """The criteria that compile; an error in `found` for each one that does not."""
    compiled = []
    for key, criterion in spec.items():
        result = _collect(found, _compile_criterion, located, key, criterion, (*where, key), found)
        if result is not None:
            compiled.append(result)
    return compiled


def _compile_criterion(
    located: Located,
    key: Any,
    criterion: Mapping[str, Any],
    path: FieldPath,
    found: list[RuleLoadError],
) -> Criterion:
    try:
        getter = fields.compile_key(str(key))
    except FieldPathError as exc:
        raise located.error(str(exc), path, at_key=True) from None
    try:
        operator = operators.get_operator(str(criterion["type"]))
    except RuleError as exc:
        raise located.error(str(exc), (*path, "type")) from None
    pattern = criterion.get("pattern")
    condition = criterion.get("condition")
    children = None
    if operator.is_search:
        try:
            operators.validate_search_condition(condition)
        except RuleError as exc:
            raise located.error(str(exc), (*path, "condition") if condition else path) from None
        if not isinstance(pattern, dict) or not pattern:
            raise located.error(
                "a search criterion's pattern must map item.<field> keys to criteria",
                (*path, "pattern"),
            )
        for child_key, child in pattern.items():
            if not isinstance(child, dict) or "type" not in child:
                raise located.error(
                    "a search child criterion needs a 'type' (and usually a 'pattern')",
                    (*path, "pattern", child_key),
                )
        child_errors: list[RuleLoadError] = []
        children_list = _compile_criteria(located, pattern, (*path, "pattern"), child_errors)
        if child_errors:
            found.extend(child_errors[1:])
            raise child_errors[0]
        children = {c.key: c for c in children_list}
    elif condition is not None:
        raise located.error(
            f"'condition' only applies to the search operator, not {operator.name}",
            (*path, "condition"),
        )
    template = None
    if isinstance(pattern, str) and templates.is_template(pattern) and not operator.is_search:
        template = _compile_template(located, pattern, (*path, "pattern"))
    elif isinstance(pattern, str) and operator.name in REGEX_OPERATORS:
        _check_regex(located, operator.name, pattern, (*path, "pattern"))
    return Criterion(
        key=str(key),
        getter=getter,
        operator=operator,
        pattern=pattern,
        pattern_template=template,
        condition=condition,
        children=children,
    )


# Operators whose pattern is a regular expression, and the flags they match with.
REGEX_OPERATORS = {"matchregex": regexes.DOTALL, "regex": 0, "iregex": regexes.IGNORECASE}


def _check_regex(located: Located, operator: str, pattern: str, path: FieldPath) -> None:
    """A fixed pattern that is no regular expression fails at load, not on every event."""
    try:
        regexes.compiled(pattern, REGEX_OPERATORS[operator])
    except regexes.PatternError as exc:
        raise located.error(
            f"{operator} pattern {pattern!r} is not a valid regular expression: {exc}", path
        ) from None


def _compile_template(located: Located, source: Any, path: FieldPath) -> templates.Template:
    if not isinstance(source, str):
        raise located.error(f"expected a template string, got {type_name(source)}", path)
    try:
        return templates.compile_template(source)
    except TemplateError as exc:
        raise located.error(f"invalid template: {exc}", path) from None


def _check_templates(
    located: Located, value: Any, path: FieldPath, found: list[RuleLoadError]
) -> None:
    """Compile every template in action parameters now, so syntax errors fail at load."""
    if isinstance(value, str):
        if templates.is_template(value):
            _collect(found, _compile_template, located, value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_templates(located, item, (*path, key), found)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_templates(located, item, (*path, index), found)


def _check_system_trigger_parameters(located: Located, trigger: Mapping[str, Any]) -> None:
    """Refuse trigger parameters that break a system trigger type's schema, as StackStorm
    does (pack trigger types: engine.rules.trigger_parameters.unfit_trigger_parameters)."""
    schema = SYSTEM_PARAMETER_SCHEMAS.get(trigger["type"])
    problems = parameter_problems(trigger["type"], trigger.get("parameters"), schema)
    if problems:
        path, message = problems[0]
        where = ("trigger", "parameters", *path) if "parameters" in trigger else ("trigger",)
        if not message.startswith(trigger["type"]):
            message = f"{trigger['type']} {format_path(where)}: {message}"
        raise located.error(message, where, at_key=message.count("unknown parameter") > 0)


def _parameter_lines(
    located: Located, parameters: Mapping[str, Any], where: FieldPath
) -> dict[str, int]:
    lines = {}
    for name in parameters:
        line, _ = located.position((*where, name))
        if line is not None:
            lines[str(name)] = line
    return lines


def _schema_error(located: Located, error: jsonschema.ValidationError) -> RuleLoadError:
    path = tuple(error.absolute_path)
    validator = error.validator
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        message = f"missing required field {missing!r}"
    elif validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = list(error.schema.get("properties", {}))
        bad = extra[0] if extra else "?"
        return located.error(
            f"unknown field {bad!r}{suggestion(str(bad), known)}", (*path, bad), at_key=True
        )
    elif validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        message = f"expected {expected}, got {type_name(error.instance)}"
    elif validator == "enum":
        message = (
            f"expected one of {', '.join(map(str, error.validator_value))}, got {error.instance!r}"
        )
    elif validator == "minLength":
        message = f"{format_path(path)} must not be empty"
    elif validator == "maxLength":
        message = f"{format_path(path)} {too_long(len(error.instance), error.validator_value)}"
    elif validator == "pattern" and path == ("name",):
        message = f"rule name {error.instance!r} holds a control character; remove it"
    elif validator == "pattern":
        message = f"{error.instance!r} is not valid here (allowed: {error.validator_value})"
        if path == ("action", "ref"):
            message = f"action ref {error.instance!r} must be <pack>.<action>"
    else:
        message = error.message
    return located.error(message, path)


# Backstop is a rule type StackStorm documents; exported for callers that check it.
__all__ = ["BACKSTOP", "DEFAULT_PACK", "build_rule", "load_rule", "load_rules"]
