"""A pack's ``sensors/*.yaml``: which sensor class to run, how often, and the trigger
types it declares (facts from StackStorm's SensorTypeAPI and contrib/examples/sensors).

Only metadata here: running a sensor is the sensors role's work (engine.workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import EngineError, PackError
from engine.model.names import MAX_NAME_CHARS
from engine.packs.action import stable_id
from engine.packs.metadata import (
    check_schema,
    metadata_files,
    pack_error,
    read_metadata,
    require_mapping,
)
from engine.packs.triggers import TriggerType, add_trigger_type, build_trigger_type
from engine.rules.yamlsource import Located

SENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["class_name", "entry_point"],
    "additionalProperties": False,
    "properties": {
        "class_name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "name": {"type": "string"},
        "entry_point": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "poll_interval": {"type": "number", "exclusiveMinimum": 0},
        "enabled": {"type": "boolean"},
        "trigger_types": {"type": "array", "items": {"type": ["object", "string"]}},
        "pack": {"type": "string"},
        "artifact_uri": {"type": "string"},
        "metadata_file": {"type": "string"},
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "ref": {"type": "string"},
    },
}
_SENSOR_VALIDATOR = jsonschema.Draft4Validator(SENSOR_SCHEMA)
# StackStorm's PollingSensor default when poll_interval is not given.
DEFAULT_POLL_INTERVAL = 5.0


@dataclass(frozen=True, eq=False)
class SensorSpec:
    pack: str
    class_name: str
    entry_point: str  # absolute path of the module
    description: str = ""
    poll_interval: float | None = None
    enabled: bool = True
    trigger_types: tuple[str, ...] = ()  # refs
    source: str | None = None
    line: int | None = None
    pack_path: str = ""

    @property
    def ref(self) -> str:
        return f"{self.pack}.{self.class_name}"

    @property
    def uid(self) -> str:
        return f"sensor_type:{self.pack}:{self.class_name}"

    def to_api(self) -> dict[str, Any]:
        """StackStorm's SensorTypeAPI shape (``st2 sensor list``)."""
        entry = self.entry_point
        try:
            entry = Path(self.entry_point).relative_to(Path(self.pack_path) / "sensors").as_posix()
        except ValueError:
            pass
        return {
            "id": stable_id(self.uid),
            "uid": self.uid,
            "ref": self.ref,
            "name": self.class_name,
            "pack": self.pack,
            "description": self.description,
            "artifact_uri": f"file://{self.entry_point}",
            "entry_point": entry,
            "enabled": self.enabled,
            "trigger_types": list(self.trigger_types),
            "poll_interval": self.poll_interval,
        }


def load_sensors(
    pack_dir: Path,
    ref: str,
    files: list[str],
    trigger_types: dict[str, TriggerType],
    errors: list[EngineError],
) -> dict[str, SensorSpec]:
    """``sensors/*.yaml`` by class name; their declared trigger types are added to
    ``trigger_types`` (a name already taken there is an error)."""
    sensors: dict[str, SensorSpec] = {}
    for file in metadata_files(pack_dir / "sensors"):
        files.append(file.relative_to(pack_dir).as_posix())
        try:
            located = read_metadata(file)
            spec, declared = _read_sensor(located, ref, pack_dir)
        except PackError as exc:
            errors.append(exc)
            continue
        first = sensors.get(spec.class_name)
        if first is not None:
            errors.append(
                PackError(
                    f"sensor {spec.ref!r} is already defined at {first.source}:{first.line or 1}",
                    file=spec.source,
                    line=spec.line,
                )
            )
            continue
        sensors[spec.class_name] = spec
        # The entry point is resolved; the pack folder may have been given relative.
        files.append(Path(spec.entry_point).relative_to(pack_dir.resolve()).as_posix())
        for trigger_type in declared:
            add_trigger_type(trigger_types, trigger_type, errors)
    return sensors


def _read_sensor(
    located: Located, pack_ref: str, pack_dir: Path
) -> tuple[SensorSpec, list[TriggerType]]:
    data = require_mapping(located, "a sensor file")
    check_schema(located, data, _SENSOR_VALIDATOR)
    class_name = data["class_name"]
    sensor_ref = f"{pack_ref}.{class_name}"
    entry = (pack_dir / "sensors" / data["entry_point"]).resolve()
    if not entry.is_relative_to(pack_dir.resolve()):
        raise pack_error(located, "entry_point must stay inside the pack", ("entry_point",))
    if not entry.is_file():
        raise pack_error(
            located, f"entry_point {data['entry_point']!r} does not exist", ("entry_point",)
        )
    declared: list[TriggerType] = []
    refs: list[str] = []
    for index, item in enumerate(data.get("trigger_types") or []):
        if isinstance(item, str):  # a ref of a type declared elsewhere
            refs.append(item if "." in item else f"{pack_ref}.{item}")
            continue
        trigger_type = build_trigger_type(
            located, item, pack_ref, ("trigger_types", index), sensor=sensor_ref
        )
        declared.append(trigger_type)
        refs.append(trigger_type.ref)
    line, _ = located.position(())
    interval = data.get("poll_interval")
    spec = SensorSpec(
        pack=pack_ref,
        class_name=class_name,
        entry_point=str(entry),
        description=data.get("description", ""),
        poll_interval=float(interval) if interval is not None else None,
        enabled=data.get("enabled", True),
        trigger_types=tuple(refs),
        source=located.file,
        line=line,
        pack_path=str(pack_dir.absolute()),
    )
    return spec, declared
