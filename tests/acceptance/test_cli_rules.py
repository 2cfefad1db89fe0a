"""The real `hookyard rule` CLI in a subprocess, on the shipped example rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def hookyard(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rule_test_on_every_example_matches_and_renders():
    for name in ("github_push", "stripe_payment", "deploy_finished"):
        result = hookyard(
            "rule",
            "test",
            f"rules/{name}.yaml",
            "--payload",
            f"rules/samples/{name}.json",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["matched"] is True
        assert all(item["passed"] for item in report["trace"])
        assert report["parameters"]
    stripe = json.loads(
        hookyard(
            "rule",
            "test",
            "rules/stripe_payment.yaml",
            "--payload",
            "rules/samples/stripe_payment.json",
            "--json",
        ).stdout
    )
    assert stripe["parameters"]["body"]["amount"] == 25000


def test_rule_test_not_matched_exits_1_with_the_failing_criterion(tmp_path):
    payload = json.loads((ROOT / "rules/samples/github_push.json").read_text())
    payload["body"]["ref"] = "refs/heads/feature"
    (tmp_path / "p.json").write_text(json.dumps(payload))
    result = hookyard(
        "rule", "test", "rules/github_push.yaml", "--payload", str(tmp_path / "p.json")
    )
    assert result.returncode == 1
    assert "NOT MATCHED" in result.stdout
    assert "FAIL" in result.stdout and "refs/heads/feature" in result.stdout


def test_rule_test_wrong_trigger_and_errors_exit_2(tmp_path):
    wrong = hookyard(
        "rule",
        "test",
        "rules/github_push.yaml",
        "--payload",
        "rules/samples/github_push.json",
        "--trigger",
        "other.trigger",
        "--json",
    )
    assert wrong.returncode == 1
    assert "listens to core.st2.webhook" in json.loads(wrong.stdout)["reason"]
    (tmp_path / "bad.json").write_text("{not json: [")
    bad = hookyard(
        "rule", "test", "rules/github_push.yaml", "--payload", str(tmp_path / "bad.json")
    )
    assert bad.returncode == 2
    assert "payload is neither JSON nor YAML" in bad.stderr
    (tmp_path / "r.yaml").write_text("name: x\n")
    broken = hookyard(
        "rule", "test", str(tmp_path / "r.yaml"), "--payload", "rules/samples/github_push.json"
    )
    assert broken.returncode == 2
    assert "missing required field" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_rule_validate_prints_file_line_col_for_every_error(tmp_path):
    good = (ROOT / "rules/github_push.yaml").read_text()
    (tmp_path / "ok.yaml").write_text(good)
    (tmp_path / "bad1.yaml").write_text(good.replace("type: equals", "type: equal", 1))
    (tmp_path / "bad2.yaml").write_text(good.replace("criteria:", "critera:"))
    result = hookyard("rule", "validate", str(tmp_path))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if ".yaml:" in line]
    assert len(lines) == 2
    assert any(f"{tmp_path}/bad1.yaml:14:11: unknown operator 'equal'" in line for line in lines)
    assert any("did you mean 'criteria'" in line for line in lines)
    ok = hookyard("rule", "validate", "rules")
    assert ok.returncode == 0 and "ok: 3 rule(s)" in ok.stdout


def test_rule_validate_warns_about_a_shell_value_the_quoter_would_refuse(tmp_path):
    rule = tmp_path / "injectable.yaml"
    rule.write_text(
        "name: injectable\n"
        "pack: t\n"
        "trigger: {type: core.st2.webhook, parameters: {url: h}}\n"
        "action:\n"
        "  ref: core.local\n"
        "  parameters:\n"
        "    cmd: 'echo \"$(echo {{ trigger.body.x }})\"'\n"
    )
    result = hookyard("rule", "validate", str(rule), "--packs", str(tmp_path))
    assert result.returncode == 0, result.stderr  # a warning: the rule still loads
    assert f"{rule}:7: warning: rule t.injectable: action parameter 'cmd': " in result.stderr
    assert "inside a command substitution $(...)" in result.stderr
    assert "pass the value through the action's env parameter" in result.stderr
    assert "1 warning(s)" in result.stdout


def test_rule_validate_refuses_a_billion_laughs_file_quickly(tmp_path):
    levels = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "name: bomb\ntrigger: {type: core.st2.webhook, parameters: {url: x}}\n"
        "action: {ref: core.noop}\nlaughs:\n" + "".join(f"  {line}\n" for line in levels)
    )
    result = hookyard("rule", "validate", str(bomb))
    assert result.returncode != 0
    assert f"{bomb}:10:" in result.stdout + result.stderr
    assert "more than 100,000 nodes" in result.stdout + result.stderr
