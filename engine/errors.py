"""The one exception tree of Hookyard.

Every error a user can cause says what was wrong, where (file:line, field path,
header) and, where possible, how to fix it. Driver errors (sqlite3, asyncpg,
aiohttp client) are translated into these types at the layer that talks to the driver.
"""

from __future__ import annotations


class EngineError(Exception):
    """Raised for any error Hookyard itself reports; the root of the tree."""


class LocatedError(EngineError):
    """Base of errors found in a file an author wrote; prints as ``file:line:col: message``."""

    # Shown in place of the file name when the source has none (a string, an API body).
    unnamed_origin: str | None = None

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        origin = self.file or self.unnamed_origin
        if origin is None:
            return ""
        parts = [origin]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts) + ": "


# --- configuration ---------------------------------------------------------


class ConfigError(EngineError):
    """Raised when config.yaml or a HOOKYARD_* variable is invalid."""


# --- rules: loading, criteria, templates -----------------------------------


class RuleError(EngineError):
    """Raised for any problem with a rule: loading, criteria or rendering."""


class RuleLoadError(LocatedError, RuleError):
    """Raised when a rule file cannot be parsed or does not fit the rule schema.

    Carries the location so tools can print ``file:line:col: message``.
    """

    unnamed_origin = "<rule>"


class RuleLoadErrors(RuleLoadError):
    """Raised when a rule file has several problems: `errors` holds each, located; the
    first one is also this error's own location and message."""

    def __init__(self, errors: list[RuleLoadError]) -> None:
        first = errors[0]
        super().__init__(
            first.message, file=first.file, line=first.line, column=first.column, field=first.field
        )
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


class UnknownOperatorError(RuleError):
    """Raised when a criterion names an operator that is not registered."""


class FieldPathError(RuleError):
    """Raised when a criteria key cannot be parsed as a field path or JMESPath expression."""


class TemplateError(RuleError):
    """Raised when a Jinja template cannot be compiled or rendered."""


class SandboxViolation(TemplateError):
    """Raised when a template tries to reach outside the sandbox (dunder access, format...)."""


class ShellContextError(TemplateError):
    """Raised when a shell command template would insert a value where the shell context is
    unknown or unsafe ($(...), backticks, here-documents, sh -c...); the value belongs in env."""


class EvaluatorUnavailable(RuleError):
    """Raised when no rule evaluator process can be started to decide trigger instances."""


# --- registries --------------------------------------------------------------


class RegistryError(EngineError):
    """Raised when a named registry gets a duplicate or an unknown name."""


# --- names -------------------------------------------------------------------


class NameTooLong(EngineError):
    """Raised when a name or ref is longer than its bound (engine.model.names)."""


# --- store -----------------------------------------------------------------


class StoreError(EngineError):
    """Raised for a failure in the store, translated from the database driver."""


class StoreUnavailable(StoreError):
    """Raised when the database cannot be reached or opened."""


class StoreBusy(StoreError):
    """Raised when the store cannot take more work now (backlog bound, lock timeout)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(StoreError):
    """Raised when a worker completes a row whose lease another worker now holds."""


class NotFound(StoreError):
    """Raised when a requested record does not exist."""


class Conflict(StoreError):
    """Raised when a write would violate a uniqueness rule (a name already taken...)."""


# --- ingest (HTTP surface) ---------------------------------------------------


class IngestError(EngineError):
    """Raised when an incoming webhook request is refused; carries the HTTP status."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class AuthError(IngestError):
    """Raised when a request has no valid credential (401) or one without the right (403)."""

    status = 401
    # The WWW-Authenticate challenge a 401 carries (RFC 9110 §11.6.1 requires one). API
    # keys have no registered scheme; "ApiKey" is the one in common use.
    challenge = 'ApiKey realm="hookyard"'


# --- packs, actions, runners -------------------------------------------------


class PackError(LocatedError):
    """Raised when a pack or action metadata file is invalid; located like a rule error."""


class UnsupportedRunnerError(PackError):
    """Raised when an action names a StackStorm runner Hookyard does not run (remote over
    SSH, WinRM, inquiries...): a known gap, not a typo. The action does not load."""


class PackNotConfiguredError(PackError):
    """Raised when a pack's config schema requires an item and no config file gives it:
    the pack loads, its actions that read the item fail when run."""


class ActionError(EngineError):
    """Raised when an action cannot be found or its parameters are invalid."""


class RunnerError(EngineError):
    """Raised when a runner cannot start or complete an execution."""


# --- outbound ----------------------------------------------------------------


class OutboundError(EngineError):
    """Raised when an outbound request cannot be made."""


class DestinationRefused(OutboundError):
    """Raised when the SSRF guard refuses a destination URL or address."""


# --- criteria evaluation (internal signal, caught by the evaluator) ---------


class CriterionTypeError(RuleError):
    """Raised by an operator when value and pattern cannot be compared (str vs int...).

    The evaluator catches it: the criterion fails with this message as its reason.
    """


# --- YAML --------------------------------------------------------------------


class YamlLimitError(LocatedError):
    """Raised when a YAML document's aliases expand past the limit (an alias bomb), refer
    to themselves, or nest too deeply to be read (engine.support.safeyaml)."""

    unnamed_origin = "<yaml>"


# --- workflows (Orquesta) ----------------------------------------------------


class WorkflowError(EngineError):
    """Raised for any problem with an Orquesta workflow: its definition or its expressions."""


class WorkflowProblem(LocatedError, WorkflowError):
    """One problem found in a workflow definition, located ``file:line:col: field: message``.

    Not raised alone: a `WorkflowSpecError` carries every problem found in one file.
    """

    unnamed_origin = "<workflow>"


class WorkflowSpecError(WorkflowError):
    """Raised when a workflow definition does not parse or does not fit the Orquesta spec;
    carries every problem found (``problems``), not only the first."""

    def __init__(self, problems: list[WorkflowProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class WorkflowExpressionError(WorkflowError):
    """Raised when a ``<% %>`` or ``{{ }}`` expression of a workflow cannot be compiled or
    evaluated; the message quotes the expression and says why."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        self.expression = expression
        super().__init__(message)


class WorkflowStepFailed(WorkflowError):
    """Raised when a workflow step's process ran out of its time or memory budget, or
    died: the workflow fails with this message, naming the task and expression."""


class WorkflowStepUnavailable(WorkflowError):
    """Raised when no workflow step process can be started: the step is taken again
    later (its lease expires), the workflow does not fail."""
