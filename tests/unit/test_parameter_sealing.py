"""Sealing secret parameters: what is sealed, what round-trips, what is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from engine.config import DatastoreSettings, Settings
from engine.errors import ActionError
from engine.model.records import NewExecution
from engine.secrets.encryption import DatastoreCipher
from engine.secrets.sealing import SEALED, ParameterSealer, is_sealed, seal


def test_only_named_values_are_sealed_and_sealing_twice_changes_nothing() -> None:
    cipher = DatastoreCipher([Fernet.generate_key()], "test")
    given = {"token": "t", "headers": {"X-Key": "k"}, "absent": None, "plain": "p"}
    sealed = seal(frozenset({"token", "headers", "absent"}), given, cipher)
    assert is_sealed(sealed["token"]) and is_sealed(sealed["headers"])
    assert (sealed["absent"], sealed["plain"]) == (None, "p")
    assert seal(frozenset({"token"}), sealed, cipher) == sealed
    assert not is_sealed({SEALED: "x", "other": 1}) and not is_sealed("x")


def test_sealed_values_round_trip_with_their_types(tmp_path: Path) -> None:
    settings = Settings(
        datastore=DatastoreSettings(encryption_key=Fernet.generate_key().decode()),
        base_dir=str(tmp_path),
    )
    sealer = ParameterSealer(settings, lambda ref: frozenset({"token", "headers"}))
    new = NewExecution("p.a", {"token": "t0k", "headers": {"X-Key": "k"}, "n": 3})
    stored = sealer.seal_execution(new)
    assert stored.id == new.id and stored.parameters["n"] == 3
    assert "t0k" not in str(stored.parameters)
    assert sealer.unseal(stored.parameters) == new.parameters


def test_a_value_sealed_with_another_key_names_the_parameter(tmp_path: Path) -> None:
    def settings_with(key: bytes) -> Settings:
        return Settings(
            datastore=DatastoreSettings(encryption_key=key.decode()), base_dir=str(tmp_path)
        )

    def secret(ref: str) -> frozenset[str]:
        return frozenset({"token"})

    stored = ParameterSealer(settings_with(Fernet.generate_key()), secret).seal_execution(
        NewExecution("p.a", {"token": "t0k"})
    )
    other = ParameterSealer(settings_with(Fernet.generate_key()), secret)
    with pytest.raises(ActionError, match="secret parameter 'token' cannot be unsealed"):
        other.unseal(stored.parameters)


def test_an_action_without_secrets_is_left_as_it_is(tmp_path: Path) -> None:
    sealer = ParameterSealer(Settings(base_dir=str(tmp_path)), lambda ref: frozenset())
    new = NewExecution("p.a", {"token": "t0k"})
    assert sealer.seal_execution(new) is new
    assert not list(tmp_path.rglob("*.key"))  # no key file was needed, none was made
