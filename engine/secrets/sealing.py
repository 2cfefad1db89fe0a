"""Secret action parameters sealed at rest (StackStorm: secret parameters are masked in
stored parameters, results and logs).

An execution's parameters that its action declares `secret: true` are written to the
store sealed: ``{"$hookyard_secret": "<Fernet token of the value's JSON>"}``, with the
datastore's key (engine.secrets.encryption: `datastore.encryption_key`, else the key file). The
actions worker unseals them just before validating and running; the API shows
``********`` either way. Every process that runs actions needs the key the sealing
process used, as for secret datastore values.

Sealing happens at the one place every new execution passes — the store, which the
runtime gives a `ParameterSealer` (`store.use_sealer`, engine.store.sealer) — so rules,
`POST /api/v1/executions` and anything else that creates executions get it alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from engine.config import Settings
from engine.errors import ActionError
from engine.model.kv import DatastoreError
from engine.model.records import NewExecution
from engine.secrets.encryption import DatastoreCipher, load_cipher, require_cipher

SEALED = "$hookyard_secret"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SEALED), str)


def seal(
    names: frozenset[str], parameters: Mapping[str, Any], cipher: DatastoreCipher
) -> dict[str, Any]:
    """`parameters` with the value of each name in `names` sealed (None stays None)."""
    return {
        name: {SEALED: cipher.encrypt(json.dumps(value))}
        if name in names and value is not None and not is_sealed(value)
        else value
        for name, value in parameters.items()
    }


class ParameterSealer:
    """Seals the secret parameters of new executions and unseals them for a run."""

    def __init__(self, settings: Settings, secret_names: Callable[[str], frozenset[str]]) -> None:
        self._settings = settings
        # Action ref -> its secret parameter names (empty for an unknown action).
        self._secret_names = secret_names
        self._cipher: DatastoreCipher | None = None

    def seal_execution(self, new: NewExecution) -> NewExecution:
        names = self._secret_names(new.action)
        if not names or not any(new.parameters.get(name) is not None for name in names):
            return new
        # The first secret ever written creates the key file, as the datastore does.
        sealed = seal(names, new.parameters, self._cipher_for(create=True))
        return dataclasses.replace(new, parameters=sealed)

    def unseal(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """`parameters` with sealed values opened; ActionError naming the parameter when
        one cannot be (no key, or another key than the one that sealed it)."""
        opened = dict(parameters)
        for name, value in parameters.items():
            if not is_sealed(value):
                continue
            try:
                opened[name] = json.loads(self._cipher_for(create=False).decrypt(value[SEALED]))
            except DatastoreError as exc:
                raise ActionError(f"secret parameter {name!r} cannot be unsealed: {exc}") from None
        return opened

    def seal_value(self, value: Any) -> dict[str, str]:
        """Any JSON value sealed whole (a workflow's state holding secret inputs)."""
        return {SEALED: self._cipher_for(create=True).encrypt(json.dumps(value))}

    def unseal_value(self, value: Any) -> Any:
        """A value sealed by seal_value opened (any other value as it is)."""
        if not is_sealed(value):
            return value
        try:
            return json.loads(self._cipher_for(create=False).decrypt(value[SEALED]))
        except DatastoreError as exc:
            raise ActionError(f"a sealed workflow state cannot be unsealed: {exc}") from None

    def _cipher_for(self, *, create: bool) -> DatastoreCipher:
        if self._cipher is None:
            if create:
                self._cipher = load_cipher(self._settings, create=True)
            else:
                self._cipher = require_cipher(self._settings)
        assert self._cipher is not None  # create=True always yields one
        return self._cipher
