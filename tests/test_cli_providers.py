"""`--provider` on the command line: the simulated service speaks the dialect, the provider's
rules are checked before sending, and a batch resumes through its own provider only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import ENV_VARS, assert_mp4, invoke

from hailuo_async.cli._app import cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts without the user's key or settings, in its own directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_every_command_takes_a_provider() -> None:
    """--provider (and HAILUO_PROVIDER) is an option of every command but fake-server's own."""
    for name, command in cli.commands.items():
        if name == "fake-server":
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", ())}
        assert "--provider" in options, name


def test_a_simulated_minimax_batch_runs_and_resumes_through_minimax_only(tmp_path: Path) -> None:
    """--simulate --provider minimax runs a batch against MiniMax's dialect; the journal then
    holds a MiniMax batch, which --provider gateway refuses to resume (exit 2, nothing sent)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na paper boat\n", encoding="utf-8")
    done = invoke("batch", str(prompts), "--simulate", "--provider", "minimax", "--out", "out")
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["succeeded", "succeeded"]
    for line in lines:
        assert_mp4(Path(line["file"]))
    refused = invoke("batch", str(prompts), "--simulate", "--out", "out")
    assert refused.exit_code == 2, refused.output
    assert "'minimax' provider" in refused.output
    assert "--provider minimax" in refused.output
    again = invoke("batch", str(prompts), "--simulate", "--provider", "minimax", "--out", "out")
    assert again.exit_code == 0, again.output


def test_the_provider_s_rules_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    """A model the gateway does not serve, or 512P without a first frame on MiniMax: exit 2,
    the field named, the line too for a batch file."""
    gateway = invoke("generate", "a fox", "--model", "MiniMax-Hailuo-2.3", "--simulate")
    assert gateway.exit_code == 2
    assert "model" in gateway.output
    minimax = invoke(
        "generate", "a fox", "--resolution", "512P", "--simulate", "--provider", "minimax"
    )
    assert minimax.exit_code == 2
    assert "resolution" in minimax.output
    jobs = tmp_path / "jobs.jsonl"
    rows = [{"prompt": "fine"}, {"prompt": "newer", "model": "MiniMax-Hailuo-2.3"}]
    jobs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    refused = invoke("batch", str(jobs), "--simulate", "--out", "out")
    assert refused.exit_code == 2
    assert "jobs.jsonl:2: model" in refused.output
    assert not (tmp_path / "out").exists()
    taken = invoke("batch", str(jobs), "--dry-run", "--provider", "minimax")
    assert taken.exit_code == 0, taken.output


def test_the_provider_comes_from_the_environment(tmp_path: Path) -> None:
    """HAILUO_PROVIDER=minimax makes a simulated generate speak MiniMax's dialect."""
    made = invoke(
        "generate",
        "a fox",
        "--simulate",
        "--model",
        "MiniMax-Hailuo-2.3",
        "--out",
        "videos",
        env={"HAILUO_PROVIDER": "minimax"},
    )
    assert made.exit_code == 0, made.output
    assert_mp4(tmp_path / made.stdout.strip())
