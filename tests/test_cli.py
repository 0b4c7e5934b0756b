import json

from typer.testing import CliRunner

from hmxfeel.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, (result.stderr or "") + (result.stdout or "")


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("hmx: error: ")
    return lines[0]


def test_help_everywhere():
    for cmd in ([], ["train"], ["judge-probe"], ["config"], ["check-rubric"]):
        code, out = run(*cmd, "--help")
        assert code == 0 and "Usage" in out


def test_unknown_model_is_one_line_exit_2(tmp_path):
    code, out = run("train", "--model", "not-a-model", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown model 'not-a-model'" in one_error_line(out)
    code, out = run("train", "--model", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and "has no config.json" in one_error_line(out)


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"model": "x"}))
    code, text = run("train", "--model", "embedded", "--out", str(out))
    assert code == 2 and "--resume" in one_error_line(text)
    assert json.loads((out / "run.json").read_text()) == {"model": "x"}


def test_bad_config_rubric_and_direction(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lerning_rate: 0.1\n")
    code, out = run("train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and "did you mean 'learning_rate'" in one_error_line(out)
    code, out = run("check-rubric", str(tmp_path / "missing.yaml"))
    assert code == 2 and "file not found" in one_error_line(out)
    code, out = run("train", "--direction", "sideways", "--model", "x/y", "--out", str(tmp_path / "r2"))
    assert code == 2 and "--direction" in one_error_line(out)
    assert not (tmp_path / "r2").exists()


def test_bad_limits_rejected_before_any_work(tmp_path):
    code, out = run("eval", "--suite", "humanlike", "--limit", "0", "--out", str(tmp_path / "e"))
    assert code == 2 and "--limit must be >= 1" in one_error_line(out)
    assert not (tmp_path / "e").exists()


def test_multi_token_score_tokens_leave_no_run_behind(tmp_path, smol_twin):
    import yaml

    from hmxfeel.rubric import DEFAULT_RUBRIC

    data = yaml.safe_load(DEFAULT_RUBRIC.read_text())
    data["formats"]["yes_no"]["tokens"] = {" Absolutely": 1, "Nope!": 0}
    data["judge_format"] = "yes_no"
    rubric = tmp_path / "r.yaml"
    rubric.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    code, text = run("train", "--model", str(smol_twin), "--rubric", str(rubric), "--out", str(out), "--device", "cpu")
    assert code == 2 and "is 2 tokens" in text.splitlines()[-1] or "tokens for this tokenizer" in text
    assert not (out / "run.json").exists()  # a corrected rerun needs neither --resume nor --force


def test_vllm_paths_fail_clearly_without_gpu_or_vllm(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("use_vllm: true\n")
    code, out = run("train", "--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "r"))
    assert code == 2 and "use_vllm needs a GPU" in one_error_line(out)
    cfg.write_text("use_vllm: true\nvllm_mode: remote\n")
    code, out = run("train", "--config", str(cfg), "--device", "cpu", "--out", str(tmp_path / "r"))
    assert code == 2 and "vllm_mode must be one of" in one_error_line(out)
    code, out = run("eval", "--backend", "vllm", "--out", str(tmp_path / "e"))
    assert code == 2 and "vLLM" in one_error_line(out)
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_offline_hub_id_fails_fast_in_one_line(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE and an id not in the cache: one line at once, not ~25 s of huggingface_hub retries."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    code, out = run(
        "eval", "--model", "fake-org/no-such-model-xyz", "--suite", "humanlike", "--out", str(tmp_path / "e")
    )
    assert code == 2 and "HF_HUB_OFFLINE" in one_error_line(out) and "fake-org/no-such-model-xyz" in out
    assert time.monotonic() - start < 10


def test_report_to_option_is_validated(tmp_path):
    code, out = run("train", "--report-to", "tensorbored", "--out", str(tmp_path / "r"))
    assert code == 2 and "report_to must be one of" in one_error_line(out)
    code, out = run("train", "--help")
    assert "--report-to" in out


def test_config_lists_the_rubrics_judge_formats():
    code, out = run("config")
    assert code == 0 and "report_to" in out
    flat = " ".join(out.replace("│", " ").split())
    assert "readout (default)" in flat and "demonstrations" in flat and "yes_no" in flat
