"""The action chain conductor: a pure state machine that decides which link runs next.

The role the Orquesta conductor (engine.workflows.conductor) plays for a workflow, for
StackStorm's `action-chain` runner: ``ChainConductor.start(spec, scope)`` renders `vars`
and requests the default link; ``link_finished(name, status, result, ...)`` records one
link's end and returns the next request, if any. Between calls the whole state is
`conductor.state`, a plain dict that round-trips through ``json.dumps``, stored by the
runner in the same transaction as the step. Nothing here runs an action or reads the
store: the action's parameters, its context and the datastore come in a `ChainScope`.

Semantics follow StackStorm's runner (action_chain_runner.py):
- links run one at a time; `on-success` follows a succeeded link, `on-failure` any
  other end (failed, timeout, abandoned); a canceled link cancels the chain;
- the chain's status is the last link's (`succeeded` / `failed` / `timeout`), so a failed
  link handled by a succeeding `on-failure` link leaves the chain succeeded;
- `params` are Jinja over the action's parameters, earlier results by link name, `vars`
  (published values included), `__results`, `st2kv`, `action_context` and `__context`;
  unlike StackStorm, a shell command's inserted values are shell-quoted and a URL's
  percent-encoded, as in a rule's parameters (engine.rules.parameter_kinds);
  `publish` renders after a link ends, over the same plus that link's result;
- `pause()` lets the running link end and holds the next one back; `resume()` requests
  it (StackStorm's `st2 execution pause|resume` of a chain);
- a link whose params do not render, or whose action does not exist, fails the chain
  with a top-level `error` and no task entry for that link; so does a publish that does
  not render, after the link's entry;
- the result is ``{"tasks": [...], "published": {...}}`` (published unless the runner
  parameter `display_published` is false), plus `error` for a top-level failure.

StackStorm has no bound on the links a chain runs; a chain leading back to itself would
run forever, so `ChainScope.max_links` bounds it (setting `workers.max_chain_links`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError, TemplateError, WorkflowError
from engine.rules import templates
from engine.rules.kvlookup import decrypt_kv
from engine.rules.parameter_kinds import SHELL_COMMAND, render_parameter
from engine.rules.templates import Template, is_template
from engine.workflows.chain_spec import ChainSpec, LinkSpec
from engine.workflows.functions import DATA_FUNCTIONS, sized

__all__ = ["ChainConductor", "ChainScope", "LinkRequest"]

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
TIMEOUT, CANCELED = "timeout", "canceled"
PAUSING, PAUSED = "pausing", "paused"
#: Chain statuses after which nothing runs again.
COMPLETED = frozenset({SUCCEEDED, FAILED, TIMEOUT, CANCELED})
DEFAULT_MAX_LINKS = 1000
_STATE_VERSION = 1
# Long template sources are cut in error messages.
_SHOWN = 200
# StackStorm's Jinja filters beyond the rule templates' (to_human_time_from_seconds,
# version_*, to_json_string...): Orquesta's catalog, as its Jinja expressions have it.
_FILTERS = {name: sized(function) for name, function in DATA_FUNCTIONS.items()}
# StackStorm's chains decrypt a secret datastore value with it (its examples'
# decrypt_kv_jinja_filter chain); the rule filters have it, this sandbox is a new one.
_FILTERS["decrypt_kv"] = decrypt_kv
_SANDBOX = templates.sandbox_with_filters(_FILTERS)
_SHELL_SANDBOX = templates.sandbox_with_filters(_FILTERS, shell=True)


@dataclass(frozen=True)
class LinkRequest:
    """Run `action` with `parameters` for link `name`, the chain's `index`-th link run."""

    name: str
    action: str
    parameters: dict[str, Any]
    index: int
    link: LinkSpec


@dataclass(frozen=True)
class ChainScope:
    """What rendering reads besides the state: the action's parameters (never stored in
    the state, so a secret parameter stays sealed at rest), `action_context` (StackStorm's
    `{"parent": {"execution_id": ..., "user": ...}}`), st2kv, and whether an action
    exists."""

    parameters: Mapping[str, Any] = field(default_factory=dict)
    action_context: Mapping[str, Any] = field(default_factory=dict)
    st2kv: Any = None
    action_exists: Callable[[str], bool] = lambda ref: True
    #: The parameters of action `ref` that render their own way (engine.rules.parameter_kinds:
    #: a shell command quotes each inserted value, a URL percent-encodes it).
    parameter_kinds: Callable[[str], Mapping[str, str]] = lambda ref: {}
    display_published: bool = True
    max_links: int = DEFAULT_MAX_LINKS
    #: Told each template before it is rendered (the step's child process writes it
    #: where its watchdog reads it, to name what ran out of time).
    progress: Callable[[str], None] | None = None


class ChainConductor:
    def __init__(self, spec: ChainSpec, state: dict[str, Any], scope: ChainScope) -> None:
        if state.get("version") != _STATE_VERSION:
            raise WorkflowError(f"chain state version {state.get('version')!r} is unknown")
        self.spec = spec
        self.state = state
        self.scope = scope

    @property
    def status(self) -> str:
        return self.state["status"]

    @classmethod
    def start(cls, spec: ChainSpec, scope: ChainScope) -> tuple[ChainConductor, list[LinkRequest]]:
        """A new chain run: vars rendered, the default link requested."""
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "status": RUNNING,
            "vars": {},
            "results": {},
            "tasks": [],
            "published": {},
            "error": None,
            "current": None,
            "links_run": 0,
            "canceling": False,
            "held": None,
        }
        conductor = cls(spec, state, scope)
        try:
            context = {**scope.parameters, "st2kv": scope.st2kv}
            state["vars"] = _render_text_values(spec.vars, context, "vars", "", scope.progress)
        except EngineError as exc:
            return conductor._fail(f"Failed initializing ``vars`` in chain. {exc}"), []
        return conductor, conductor._request(spec.default)

    def link_finished(
        self,
        name: str,
        status: str,
        result: Any,
        *,
        execution_id: str | None = None,
        created_at: str | None = None,
        updated_at: str | None = None,
        resumed: bool = False,
    ) -> list[LinkRequest]:
        """Record the end of the running link and return the next request, if any.

        `resumed`: the chain was paused while the link waited (an inquiry, a paused
        sub-chain) and is resuming. StackStorm then rebuilds the chain's template context
        and adds the link's new result under its `result` key: templates written for it
        read `{{ link.result.response }}` (its chain_test_inquiry example)."""
        if self.state["current"] != name:
            raise WorkflowError(f"link {name!r} is not running in this chain")
        self.state["current"] = None
        link = self.spec.link(name)
        assert link is not None  # it was requested from this spec
        seen = {**result, "result": result} if resumed and isinstance(result, dict) else result
        self.state["results"][name] = seen
        self.state["tasks"].append(
            {
                "id": name,
                "name": name,
                "execution_id": execution_id,
                "liveaction_id": execution_id,
                "workflow": None,
                "created_at": created_at,
                "updated_at": updated_at,
                "state": status,
                "result": result,
            }
        )
        try:
            published = self._publish(link, result)
        except EngineError as exc:
            self._fail(f'Failed to publish the results of task "{name}". {exc}')
            return []
        self.state["vars"].update(published)
        self.state["published"].update(published)
        if status == CANCELED or self.state["canceling"]:
            self.state["status"] = CANCELED
            return []
        if status == SUCCEEDED:
            chain_status, following = SUCCEEDED, link.on_success
        else:  # failed, timeout, abandoned: StackStorm's failed states
            chain_status, following = (TIMEOUT if status == TIMEOUT else FAILED), link.on_failure
        if not following:
            self.state["status"] = chain_status
            return []
        if self.status == PAUSING:
            # StackStorm stops after the running link and resumes with the next one.
            self.state["held"] = following
            self.state["status"] = PAUSED
            return []
        return self._request(following)

    def pause(self) -> None:
        """Start no new link; paused once the running link has ended."""
        if self.status != RUNNING:
            raise WorkflowError(f"a {self.status} chain cannot be paused")
        self.state["status"] = PAUSING if self.state["current"] is not None else PAUSED

    def resume(self) -> list[LinkRequest]:
        """Run again after pause(): the link held back is requested now."""
        if self.status not in (PAUSING, PAUSED):
            raise WorkflowError(f"a {self.status} chain cannot be resumed")
        self.state["status"] = RUNNING
        held, self.state["held"] = self.state.get("held"), None
        return self._request(held) if held else []

    def cancel(self) -> None:
        """No link starts any more; the chain ends canceled once its running link has."""
        if self.status in COMPLETED:
            return
        self.state["held"] = None
        if self.state["current"] is None:
            self.state["status"] = CANCELED
        else:
            self.state["canceling"] = True

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"tasks": list(self.state["tasks"])}
        if self.scope.display_published:
            result["published"] = dict(self.state["published"])
        if self.state["error"]:
            result["error"] = self.state["error"]
        return result

    # --- inside ----------------------------------------------------------------------

    def _fail(self, message: str) -> ChainConductor:
        self.state["status"] = FAILED
        self.state["error"] = message
        self.state["current"] = None
        return self

    def _request(self, name: str) -> list[LinkRequest]:
        if is_template(name):
            name = str(self._render_name(name))
        link = self.spec.link(name)
        if link is None:
            self._fail(f'Failed to get next node. Unable to find node with name "{name}".')
            return []
        if self.state["links_run"] >= self.scope.max_links:
            self._fail(
                f'Failed to run task "{name}". The chain has run {self.scope.max_links} links,'
                " its limit (workers.max_chain_links): does a link lead back to itself"
                " without end?"
            )
            return []
        if not self.scope.action_exists(link.ref):
            self._fail(
                f'Failed to run task "{name}". Action with reference "{link.ref}" doesn\'t'
                f" exist. Task :: {name} - Action with ref {link.ref} not registered."
            )
            return []
        try:
            kinds = self.scope.parameter_kinds(link.ref)
            parameters = _render_native_values(
                link.params, self._context(), name, kinds, self.scope.progress
            )
        except EngineError as exc:
            self._fail(f'Failed to run task "{name}". Parameter rendering failed. {exc}')
            return []
        index = self.state["links_run"]
        self.state["links_run"] = index + 1
        self.state["current"] = name
        return [LinkRequest(name, link.ref, parameters, index, link)]

    def _render_name(self, source: str) -> Any:
        if self.scope.progress is not None:
            self.scope.progress(f"the next link's name {_shown(source)}")
        try:
            return _compile(source).render(self._context())
        except EngineError:
            return source  # reported as a link that does not exist

    def _context(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """StackStorm's rendering context: later entries win, as they do there."""
        results = self.state["results"]
        context: dict[str, Any] = {
            **self.scope.parameters,
            **(extra or {}),
            **results,
            **self.state["vars"],
            "__results": results,
            "st2kv": self.scope.st2kv,
            "action_context": dict(self.scope.action_context),
        }
        context["__context"] = dict(context)
        return context

    def _publish(self, link: LinkSpec, result: Any) -> dict[str, Any]:
        if not link.publish:
            return {}
        return _render_text_values(
            link.publish,
            self._context({link.name: result}),
            "publish",
            link.name,
            self.scope.progress,
        )


def _render_native_values(
    values: Mapping[str, Any],
    context: Mapping[str, Any],
    link: str,
    kinds: Mapping[str, str],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Action parameters: a `{{ expression }}` keeps its value's type (StackStorm casts
    its strings to the parameter's declared type; this needs no cast). A shell command or
    a URL quotes what it inserts, as a rule's parameters do: a link's result is data."""
    rendered = {}
    for key, value in values.items():
        if progress is not None:
            progress(f'action parameter "{key}" of task "{link}": {_shown(value)}')
        try:
            kind = kinds.get(key) if isinstance(value, str) and is_template(value) else None
            if kind == SHELL_COMMAND:
                rendered[key] = _compile(value, shell=True).render(context) or ""
            elif kind is not None:
                rendered[key] = render_parameter(kind, value, context, key)
            else:
                rendered[key] = _render(value, context, native=True)
        except EngineError as exc:
            raise WorkflowError(
                f'Failed rendering value for action parameter "{key}" in task "{link}"'
                f" (template string={_shown(value)}): {exc}"
            ) from None
    return rendered


def _render_text_values(
    values: Mapping[str, Any],
    context: Mapping[str, Any],
    what: str,
    link: str,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`vars` and `publish`: a template renders to text, as StackStorm's render_values
    does; a value with no template keeps its type."""
    rendered = {}
    for key, value in values.items():
        if progress is not None:
            where = f' of task "{link}"' if link else ""
            progress(f'{what} parameter "{key}"{where}: {_shown(value)}')
        try:
            rendered[key] = _render(value, context, native=False)
        except EngineError as exc:
            where = f' in task "{link}"' if link else ""
            raise WorkflowError(
                f'Failed rendering value for {what} parameter "{key}"{where}'
                f" (template string={_shown(value)}): {exc}"
            ) from None
    return rendered


def _render(value: Any, context: Mapping[str, Any], *, native: bool) -> Any:
    # Only the definition's own strings are templates: what they pull out of the
    # context is data and never rendered again.
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            rendered = _compile(value).render(context)
        except TemplateError as error:
            if isinstance(error.__cause__, MemoryError):
                # The step process's address-space limit (engine.workers.step_pool): it
                # ends the step, which names the limit, not this template alone.
                raise error.__cause__ from None
            raise
        return rendered if native or isinstance(rendered, str) else _text(rendered)
    if isinstance(value, dict):
        return {key: _render(item, context, native=native) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context, native=native) for item in value]
    return value


@functools.lru_cache(maxsize=1024)
def _compile(source: str, shell: bool = False) -> Template:
    """The template of a chain's string, in the sandbox with StackStorm's filters; a
    shell command's quotes every inserted value (engine.rules.shell_quoting)."""
    with warnings.catch_warnings():
        # StackStorm's examples write regexes such as "\w" in Jinja string literals, an
        # escape Python only warns about (a DeprecationWarning; an error in our tests).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        return Template(source, shell, _SHELL_SANDBOX if shell else _SANDBOX)


def _text(value: Any) -> str:
    # Jinja's own text for a value printed alone (`{{ 9101 + 1 }}` → "9102").
    return str(value)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
