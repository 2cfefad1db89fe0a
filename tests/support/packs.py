"""Writing packs and rule files into a test's folder."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path


def pack_meta(ref: str, *, name: str | None = None, description: str = "tests") -> str:
    """A pack.yaml: `name` differs from `ref` only for the tests about names."""
    return (
        f"ref: {ref}\nname: {name or ref}\ndescription: {description}\nversion: 1.0.0\n"
        "author: Hookyard tests\nemail: tests@example.com\n"
    )


def write_pack(packs: Path, ref: str, files: Mapping[str, str], *, meta: str | None = None) -> Path:
    """The pack `ref` in the packs folder `packs`: pack.yaml (`meta`, or a plain one) and
    `files` (paths inside the pack, e.g. "actions/run.yaml", to dedented text).
    Returns the pack's folder."""
    pack = packs / ref
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(meta if meta is not None else pack_meta(ref))
    for relative, text in files.items():
        path = pack / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pack


def write_rules(folder: Path, rules: Mapping[str, str]) -> Path:
    """Rule files `<stem>.yaml` (dedented) in `folder`, created if missing; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in rules.items():
        (folder / f"{stem}.yaml").write_text(textwrap.dedent(text))
    return folder


def noop_rule(url: str, name: str = "anything") -> str:
    """A rule (pack t) sending every webhook posted to /webhooks/<url> to core.noop."""
    return (
        f"name: {name}\npack: t\n"
        f"trigger: {{type: core.st2.webhook, parameters: {{url: {url}}}}}\n"
        "action: {ref: core.noop}\n"
    )
