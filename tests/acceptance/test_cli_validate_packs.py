"""The real `hookyard rule validate` in a subprocess on pack folders: StackStorm's examples
pack (a copy of some of its files, tests/support/st2_rules/examples) gives no error, and
each kind of file of a broken copy is reported as what it is, every problem of a file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "tests" / "support" / "st2_rules" / "examples"


def validate(*paths: Path | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No config.yaml in cwd and no --packs: only what is given (and the core pack) is known.
    return subprocess.run(
        [sys.executable, "-m", "engine", "rule", "validate", *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stackstorm_examples_pack_validates_without_false_errors(tmp_path):
    result = validate(EXAMPLES, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok: 6 rule(s)" in result.stdout and "1 pack(s)" in result.stdout
    # Actions are not read as rules (StackStorm's own content, Hookyard's gaps as warnings).
    assert "unknown rule field" not in result.stderr
    assert "error" not in result.stderr.replace("warning", "")
    assert "runner_type 'remote-shell-cmd' is a StackStorm runner Hookyard does not run" in (
        result.stderr
    )
    assert "did you mean" not in result.stderr
    # Given relative, from the checkout (its config.yaml's packs known too).
    relative = validate(EXAMPLES.relative_to(ROOT), cwd=ROOT)
    assert relative.returncode == 0, relative.stderr
    assert "ok: 6 rule(s)" in relative.stdout


def test_a_folder_of_packs_and_a_rules_folder_together(tmp_path):
    packs = tmp_path / "packs"
    shutil.copytree(EXAMPLES, packs / "examples")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "uses_pack.yaml").write_text(
        "name: on sample trigger\ntrigger: {type: examples.sample_trigger}\n"
        "action: {ref: examples.isprime, parameters: {value: 7}}\n"
    )
    result = validate(packs, rules, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok: 7 rule(s)" in result.stdout
    # The rule names a trigger type and an action the pack declares: no warning about them.
    assert "uses_pack.yaml" not in result.stderr


def test_every_broken_file_of_a_pack_is_reported_as_what_it_is(tmp_path):
    pack = tmp_path / "examples"
    shutil.copytree(EXAMPLES, pack)
    (pack / "rules" / "broken.yaml").write_text(
        "name: broken\n"
        "trigger:\n"
        "  type: core.st2.CronTimer\n"
        "  parameters: {minutex: 0}\n"
        "criteria:\n"
        "  trigger.a: {type: matchregex, pattern: '(unclosed'}\n"
        "  trigger.b: {type: equalz, pattern: x}\n"
        "action: {ref: core.local, parameters: {cmd: '{{ broken'}}\n"
    )
    action = pack / "actions" / "isprime.yaml"
    action.write_text(action.read_text().replace('"python-script"', '"pyhton-script"'))
    workflow = pack / "actions" / "workflows" / "orquesta-sequential.yaml"
    workflow.write_text(workflow.read_text().replace("<% ctx().name %>", "<% ctx(.name %>", 1))
    (pack / "sensors" / "sample_sensor.py").unlink()

    result = validate(pack, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "warning" not in line]
    broken = [line for line in errors if line.startswith(f"{pack}/rules/broken.yaml:")]
    assert [line.split(":")[1] for line in broken] == ["4", "6", "7", "8"]
    assert any("unknown parameter 'minutex'" in line for line in broken)
    assert any("not a valid regular expression" in line and "position 0" in line for line in broken)
    assert any(
        line.startswith(f"{action}:") and "did you mean 'python-script'" in line for line in errors
    )
    assert any(line.startswith(f"{workflow}:") for line in errors)
    assert any("sample_sensor" in line for line in errors)
    assert "unknown rule field" not in result.stderr
    assert result.stderr.strip().endswith("file(s) and 1 pack(s)")
