"""Rules whose shell command would refuse a payload value are warned about at load."""

from __future__ import annotations

import textwrap

from engine.rules import load_rule
from engine.rules.lint import lint_rules, shell_template_warnings

RULE = """\
name: r
pack: t
trigger: {type: core.st2.webhook, parameters: {url: h}}
action:
  ref: core.local
  parameters:
    env:
      X: "{{ trigger.body.x }}"
    cmd: |
      echo "$(echo {{ trigger.body.x }})"
      echo "$X"
"""


def test_a_refusing_shell_template_is_a_warning_at_its_parameter_line(tmp_path):
    file = tmp_path / "r.yaml"
    file.write_text(RULE)
    rule = load_rule(file)  # loads: existing rules keep working, the warning tells why not
    (warning,) = lint_rules([rule], known_actions={"core.local"}, known_packs={"core"})
    assert str(warning) == (
        f"{file}:9: warning: rule t.r: action parameter 'cmd': {{{{ trigger.body.x }}}} "
        "(template line 1) is inside a command substitution $(...), where a value cannot be "
        "quoted safely; pass the value through the action's env parameter instead "
        '(env: {X: "{{ trigger.body.x }}"}) and write "$X" in the command'
    )


def test_shell_parameters_come_from_the_packs_when_known(tmp_path):
    rule = load_rule(
        {
            "name": "r",
            "pack": "t",
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": "h"}},
            "action": {"ref": "ops.run", "parameters": {"cmd": "sh -c 'x {{ trigger.y }}'"}},
        }
    )
    assert shell_template_warnings(rule) == []  # ops.run unknown without its pack
    (warning,) = shell_template_warnings(rule, lambda ref: frozenset({"cmd"}))
    assert "in the arguments of sh" in warning.message
    assert shell_template_warnings(rule, lambda ref: frozenset()) == []


def test_safe_and_opted_out_shell_templates_give_no_warning():
    for cmd in (
        "echo {{ trigger.a }} \"{{ trigger.b }}\" '{{ trigger.c }}' | tee -a {{ trigger.f }}",
        "echo $(date) {{ trigger.a | unquoted }} $(echo {{ trigger.a | unquoted }})",
        textwrap.dedent("""\
            {% for x in trigger.items %}
            echo {{ x }}
            {% endfor %}"""),
    ):
        rule = load_rule(
            {
                "name": "r",
                "pack": "t",
                "trigger": {"type": "core.st2.webhook", "parameters": {"url": "h"}},
                "action": {"ref": "core.local", "parameters": {"cmd": cmd}},
            }
        )
        assert shell_template_warnings(rule) == [], cmd
