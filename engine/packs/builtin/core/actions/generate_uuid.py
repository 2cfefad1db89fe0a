"""core.uuid: a new UUID as text (uuid4 unless uuid1 is asked for)."""

import uuid

from st2common.runners.base_action import Action


class GenerateUUID(Action):
    def run(self, uuid_type="uuid4"):
        if uuid_type == "uuid1":
            return str(uuid.uuid1())
        if uuid_type == "uuid4":
            return str(uuid.uuid4())
        raise ValueError(f"unknown uuid_type {uuid_type!r}: uuid1 or uuid4")
