"""Shell command templates: a value enters only where the shell context is known.

Every command here really runs under `sh -c`; a marker file created by a hostile value
is the proof of an injection.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from engine.errors import ShellContextError, TemplateError
from engine.rules.templates import render_shell_command, shell_template_problems

ADVICE = "pass the value through the action's env parameter"


def run_sh(command: str, cwd) -> subprocess.CompletedProcess[str]:
    # Bytes, decoded without newline translation: a \r in a value must arrive as \r.
    result = subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, timeout=20)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


# --- the reproductions of issue 15 item 1 --------------------------------------------

REFUSED = [
    ('echo "$(echo {{ trigger.body.x }})"', "inside a command substitution $(...)"),
    ("echo $(echo {{ trigger.body.x }})", "inside a command substitution $(...)"),
    ('echo "`echo {{ trigger.body.x }}`"', "inside a backtick command substitution"),
    ("echo `echo {{ trigger.body.x }}`", "inside a backtick command substitution"),
    ("cat <<EOF\n{{ trigger.body.x }}\nEOF", "in a here-document body"),
    ("cat <<'EOF'\nline {{ trigger.body.x }}\nEOF", "in a here-document body"),
    ("cat <<-EOF\n\t{{ trigger.body.x }}\n\tEOF", "in a here-document body"),
    ('sh -c "echo {{ trigger.body.x }}"', "in the arguments of sh"),
    ("bash -c 'echo {{ trigger.body.x }}'", "in the arguments of bash"),
    ("/bin/dash -c 'echo {{ trigger.body.x }}'", "in the arguments of dash"),
    ('eval "echo {{ trigger.body.x }}"', "in the arguments of eval"),
    ("ssh host ls {{ trigger.body.x }}", "in the arguments of ssh"),
    ("su -c 'id {{ trigger.body.x }}' nobody", "in the arguments of su"),
    ("echo a | xargs sh -c 'echo {{ trigger.body.x }}'", "in the arguments of sh"),
    ('$SHELL -c "echo {{ trigger.body.x }}"', "whose name is not literal"),
    ("timeout 5 $SHELL -c {{ trigger.body.x }}", "whose name is not literal"),
    ("echo \\{{ trigger.body.x }}", "directly after a backslash"),
    ('echo "\\{{ trigger.body.x }}"', "directly after a backslash"),
    ("echo ${{ trigger.body.x }}", "directly after a $"),
    ('echo "${{ trigger.body.x }}"', "directly after a $"),
    ("echo ${HOME:-{{ trigger.body.x }}}", "inside a parameter expansion ${...}"),
    ("echo $(( {{ trigger.body.x }} + 1 ))", "inside an arithmetic expansion $((...))"),
    ("(( {{ trigger.body.x }} ))", "inside an arithmetic command ((...))"),
    ("echo $'{{ trigger.body.x }}'", "inside $'...' quotes"),
    ("echo ok # {{ trigger.body.x }}", "in a comment"),
    ("cat <<{{ trigger.body.x }}\nbody\n", "in a here-document delimiter"),
    (
        'echo {% if trigger.body.q %}"{% endif %}{{ trigger.body.x }}'
        '{% if trigger.body.q %}"{% endif %}',
        "the quoting differs between {% if %}/{% for %} branches",
    ),
    (
        "{% if trigger.body.q %}echo '{% else %}echo {% endif %}{{ trigger.body.x }}'",
        "the quoting differs between {% if %}/{% for %} branches",
    ),
    (
        "echo {% for i in [1, 2] %}'{% endfor %}{{ trigger.body.x }}",
        "the quoting differs between {% if %}/{% for %} branches",
    ),
    (
        "echo $(case a in a) echo;; esac) {{ trigger.body.x }}",
        "(the shell context is unknown there)",
    ),
    ("{% filter upper %}echo {{ trigger.body.x }}{% endfilter %}", "inside a {% filter %}"),
    ("alias e='sh -c'\ne {{ trigger.body.x }}", "after an alias definition"),
    ("flock /tmp/lock -c 'echo {{ trigger.body.x }}'", "in the arguments of flock"),
    ("docker exec box sh -c 'echo {{ trigger.body.x }}'", "in the arguments of sh"),
    ("find . -exec $SHELL -c 'echo {{ trigger.body.x }}' \\;", "whose name is not literal"),
    ("nohup watch -n 1 {{ trigger.body.x }}", "in the arguments of watch"),
    # sg runs its command with /bin/sh -c, with or without -c (as su -c does).
    ("sg staff {{ trigger.body.x }}", "in the arguments of sg"),
    ("timeout 5 sg staff -c 'id {{ trigger.body.x }}'", "in the arguments of sg"),
    # A program that runs its stdin, downstream of the value in a pipeline: seen only after
    # the value, so decided over the whole template.
    ("echo {{ trigger.body.x }} | sh", "pipes into sh, which runs what it reads as code"),
    ("echo {{ trigger.body.x }} | bash -s", "pipes into bash"),
    ("printf %s {{ trigger.body.x }} | env python3", "pipes into python3"),
    ("echo {{ trigger.body.x }} | sudo sh", "pipes into sudo"),
    ("echo {{ trigger.body.x }} | xargs rm", "pipes into xargs"),
    ("echo {{ trigger.body.x }} | $(which sh)", "pipes into a non-literal command"),
    ("echo {{ trigger.body.x }} | tee >(bash) >/dev/null", "pipes into bash"),
    ("echo {{ trigger.body.x }} > >(sh)", "pipes into sh"),
    ("echo {{ trigger.body.x }} | sh {% if trigger.body.q %}-x{% endif %}", "pipes into sh"),
    # A subshell or bash's |& after the pipe (/bin/sh is bash on some systems).
    ("echo {{ trigger.body.x }} |& sh", "pipes into sh"),
    ("echo {{ trigger.body.x }} | (sh)", "pipes into a compound command"),
    ("echo {{ trigger.body.x }} | ( cd /tmp && sh )", "pipes into a compound command"),
    ("echo {{ trigger.body.x }} | { true; sh; }", "pipes into a compound command ({ ...)"),
    (
        'echo {{ trigger.body.x }} | while read -r l; do eval "$l"; done',
        "pipes into a compound command (while ...)",
    ),
    (". /dev/stdin <<< {{ trigger.body.x }}", "in the arguments of ."),
    # The command name: one quoted word, but it picks the program.
    ("{{ trigger.body.x }} /var/data", "where the command name stands"),
    ('echo ok; "{{ trigger.body.x }}" --version', "where the command name stands"),
    ("echo ok && ./{{ trigger.body.x }}", "where the command name stands"),
    ("source /dev/stdin <<< {{ trigger.body.x }}", "in the arguments of source"),
]


@pytest.mark.parametrize(("template", "context"), REFUSED)
def test_unknown_or_unsafe_contexts_refuse_the_value_and_nothing_runs(tmp_path, template, context):
    marker = tmp_path / "F"
    payload = {"trigger": {"body": {"x": f"a; touch {marker}; $(touch {marker})", "q": True}}}
    with pytest.raises(ShellContextError) as caught:
        render_shell_command(template, payload, "cmd")
    message = str(caught.value)
    assert message.startswith("parameter 'cmd': {{ trigger.body.x }} (template line ")
    assert context in message
    assert ADVICE in message and '(env: {X: "{{ trigger.body.x }}"})' in message
    assert 'write "$X" in the command' in message
    # Known when the template compiles, not only when a value arrives:
    (problem,) = shell_template_problems(template)
    assert context in problem
    assert not marker.exists()


def test_the_issue_reproduction_would_have_run_touch_without_the_refusal(tmp_path):
    """The naive insertion the old quoter produced for `"$(echo {{ x }})"` really injects."""
    marker = tmp_path / "F"
    old_output = f'echo "$(echo a; touch {marker})"'  # x escaped for "..." only
    run_sh(old_output, tmp_path)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ShellContextError, match=r"inside a command substitution \$\(\.\.\.\)"):
        render_shell_command('echo "$(echo {{ x }})"', {"x": f"a; touch {marker}"}, "cmd")


@pytest.mark.skipif(shutil.which("sg") is None, reason="no sg on this host")
def test_sg_hands_its_quoted_word_argument_to_a_shell(tmp_path):
    """Why sg is refused: a value quoted as one word still runs as a command under sg."""
    marker = tmp_path / "F"
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout
    run_sh(f"sg {group.strip()} 'a; touch {marker}'", tmp_path)
    assert marker.exists()
    with pytest.raises(ShellContextError, match="in the arguments of sg"):
        render_shell_command("sg staff {{ x }}", {"x": f"a; touch {marker}"}, "cmd")


def test_the_env_advice_works_where_the_quoter_refuses(tmp_path):
    marker = tmp_path / "F"
    value = f"a; touch {marker} $(touch {marker}) `touch {marker}`"
    for command in ('echo "$(echo "$X")"', "cat <<EOF\n$X\nEOF", "sh -c 'echo \"$X\"'"):
        result = subprocess.run(
            ["sh", "-c", command],
            env={"X": value, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.stdout == value + "\n", command
    assert not marker.exists()


def test_unquoted_stays_the_explicit_opt_out_everywhere():
    template = 'echo "$(echo {{ v | unquoted }})" {{ w | unquoted }}'
    assert shell_template_problems(template) == ()
    assert render_shell_command(template, {"v": "$HOME", "w": "a b"}) == 'echo "$(echo $HOME)" a b'


def test_a_refused_site_in_a_branch_not_taken_inserts_nothing_and_renders():
    template = "echo hi{% if trigger.q %} $(echo {{ trigger.x }}){% endif %}"
    assert len(shell_template_problems(template)) == 1
    assert render_shell_command(template, {"trigger": {"q": False, "x": "y"}}) == "echo hi"


def test_a_command_too_long_to_follow_refuses_its_later_values():
    template = "echo " + "word " * 200_000 + "{{ x }}"
    (problem,) = shell_template_problems(template)
    assert "too long or branchy to follow" in problem


def test_syntax_errors_are_still_template_errors():
    with pytest.raises(TemplateError, match="syntax error"):
        shell_template_problems("echo {{ x ")


# --- what keeps working ----------------------------------------------------------------

SAFE = [
    "printf '%s\\n' {{ v }}",
    "printf '%s\\n' \"{{ v }}\"",
    "printf '%s\\n' '{{ v }}'",
    "printf '%s\\n' {{ v }} \"{{ v }}\" '{{ v }}' x{{ v }}y \"a\"{{ v }}'b'",
    "printf '%s\\n' \"before {{ v }} after\" 'it''s {{ v }}'",
    "printf '%s\\n' {{ v }} | cat && printf '%s\\n' {{ v }} || false",
    "printf '%s\\n' {{ v }} | grep -v python | tr x x",
    "printf '%s\\n' {{ v }} || { echo failed; exit 1; }",
    "printf '%s\\n' {{ v }} || (echo failed) || sh -c 'exit 1'",
    "printf '%s\\n' {{ v }} > out.txt; cat < out.txt",
    "printf '%s\\n' {{ v }} 2>/dev/null",
    "V={{ v }}; printf '%s\\n' \"$V\"",
    "(printf '%s\\n' {{ v }}); { printf '%s\\n' \"{{ v }}\"; }",
    "if true; then printf '%s\\n' {{ v }}; fi",
    "for w in x; do printf '%s\\n' {{ v }}; done",
    "cat <<EOF\nliteral $(echo here) body\nEOF\nprintf '%s\\n' {{ v }}",
    "cat <<'EOF'\n'unbalanced \" quotes\nEOF\nprintf '%s\\n' \"{{ v }}\"",
    "echo $(echo ok) >/dev/null; printf '%s\\n' \"$(echo ok)\"{{ v }}",
    "echo `echo ok` >/dev/null; printf '%s\\n' {{ v }}",
    "echo \"${HOME:-x}\" $((1 + 2)) >/dev/null; printf '%s\\n' {{ v }}",
    "echo shell >/dev/null; printf '%s\\n' {{ v }}  # a comment after",
    "echo deploying at once as a script, watch it >/dev/null; printf '%s\\n' {{ v }}",
    "printf '%s\\n' {% if v %}{{ v }}{% else %}none{% endif %}",
    "printf '%s\\n' \"{% if v %}{{ v }}{% endif %}\"",
    "{% for item in items %}printf '%s\\n' {{ item }}; {% endfor %}",
    "printf '%s\\n' {% for item in items %}\"{{ item }}\" {% endfor %}",
    "ls {% if v %}-d{% endif %} . >/dev/null; printf '%s\\n' {{ v }}",
    "printf '%s\\n' {{ v }}{# a comment #} {% raw %}{{ literal }}{% endraw %}",
    "{% set greeting %}hi {{ v }}{% endset %}printf '%s\\n' {{ greeting }}",
]

# NUL-free, hostile to every context: quotes, expansions, separators, globs, newlines.
HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "'",
    '"',
    "\\",
    "\\'",
    "a; touch {marker}",
    "a && touch {marker}",
    "a || touch {marker} | touch {marker}",
    "$IFS$(touch {marker})${{IFS}}",
    "*",
    "~root/* ?[a-z]",
    "line1\nline2\ntouch {marker}\n",
    "\t\r\x1b[31m\x7f\x01",
    "' ; touch {marker} ; '",
    '" ; touch {marker} ; "',
    '\\" ; touch {marker} ; \\"',
    "EOF\ntouch {marker}",
    "-n",
    "--help",
    "{{{{ 7 * 7 }}}}",
    "$((1+1)) ${{HOME}} $HOME !! !$",
    "ünïcødé ✓ \u202e",
    "",
    " ",
]


@pytest.mark.parametrize("template", SAFE)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_safe_templates_pass_hostile_values_verbatim(tmp_path, template, hostile):
    marker = tmp_path / "F"
    value = hostile.format(marker=marker)
    assert shell_template_problems(template) == (), template
    command = render_shell_command(template, {"v": value, "items": [value, value]})
    result = run_sh(command, tmp_path)
    assert not marker.exists(), command
    assert result.returncode == 0, (command, result.stderr)
    if value and "greeting" not in template:
        assert value + "\n" in result.stdout or value in result.stdout.split("\n"), command
    if "greeting" in template:
        assert f"hi {value}\n" in result.stdout, command
