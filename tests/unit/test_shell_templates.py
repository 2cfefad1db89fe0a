"""Shell command templates: hostile values stay data in every quoting context, run by sh."""

from __future__ import annotations

import subprocess

import pytest

from engine.rules.templates import render_shell_command

HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "; touch {marker}",
    "' ; touch {marker} ; '",
    '" ; touch {marker} ; "',
    '\\" ; touch {marker} ; \\"',
    "$HOME ${{HOME}} \\$ \\\\ \n touch {marker}",
    "{{{{ 7 * 7 }}}}",
]
TEMPLATES = [
    "printf '%s' {{ trigger.value }}",
    'printf "%s" "{{ trigger.value }}"',
    "printf '%s' '{{ trigger.value }}'",
    'printf "%s" "before {{ trigger.value }} after"',
    'printf \'%s\' "it\\"s {{ trigger.value }}"',
    "printf '%s' x{{ trigger.value }}y",
    "{% if trigger.value %}printf '%s' \"{{ trigger.value }}\"{% endif %}",
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_inserted_values_never_run(tmp_path, template, hostile):
    marker = tmp_path / "pwned"
    value = hostile.format(marker=marker)
    command = render_shell_command(template, {"trigger": {"value": value}})
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=10)
    assert not marker.exists(), command
    assert result.returncode == 0, (command, result.stderr)
    assert value in result.stdout, command


def test_unquoted_is_the_explicit_opt_out():
    command = render_shell_command('echo "{{ v | unquoted }}" {{ v }}', {"v": "$HOME"})
    assert command == "echo \"$HOME\" '$HOME'"


def test_values_of_other_types_become_text():
    command = render_shell_command(
        'echo {{ a }} {{ b }} {{ c }} "{{ d }}"', {"a": None, "b": True, "c": [1, "x y"], "d": 5}
    )
    assert command == "echo '' true '[1, \"x y\"]' \"5\""
