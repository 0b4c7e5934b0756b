"""Hostile and broken input through the real CLI (and the loaders): one clear line naming the file / field,
exit code 2, and nothing already on disk overwritten or removed. Cases already covered by test_cli.py,
test_rubric.py and test_prompts_config.py are not repeated here."""

import errno
import json
import os
import re
import tempfile

import pytest
from typer.testing import CliRunner

from hmxfeel.cli import app
from tests.test_rating import (  # noqa: F401 (sheet, sources: fixtures)
    _bad_cases,
    export,
    filled,
    sheet,
    sources,
    write_csv,
)

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, (result.stderr or "") + (result.stdout or "")


def one_error_line(output: str) -> str:
    # Library progress bars ("Loading weights: 100%|...| 20/20 [..it/s]") are not error output; a bar's last
    # frame may share its line with the error that ended it.
    lines = [re.sub(r".*(it/s|s/it)\]", "", line) for line in output.splitlines()]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("hmx: error: ")
    assert "Traceback" not in output
    return lines[0]


def fails(args, *needles, stderr_only=False):
    """`stderr_only`: training prints its per-step metrics on stdout; only stderr must be the one error line."""
    if stderr_only:
        result = runner.invoke(app, [str(a) for a in args])
        code, out = result.exit_code, result.stderr or ""
    else:
        code, out = run(*args)
    line = one_error_line(out)
    assert code == 2, out
    for needle in needles:
        assert needle in line, line
    return line


def no_run(folder):
    """A refused command may leave an empty run folder (a rerun accepts it), never files."""
    return not folder.exists() or not any(folder.iterdir())


def snapshot(folder):
    """Every file under `folder` with its bytes and mtime: compared before / after a refused command."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rubric_text(**changes):
    import yaml

    from hmxfeel.rubric import DEFAULT_RUBRIC

    data = yaml.safe_load(DEFAULT_RUBRIC.read_text(encoding="utf-8"))
    for fn in changes.values():
        fn(data)
    return yaml.safe_dump(data, sort_keys=False)


def prompts_text(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD_PROMPTS = [
    {"id": "a", "prompt": "How are you?", "split": "train"},
    {"id": "b", "prompt": "Hi there", "split": "eval"},
]


# ------------------------------------------------------------------------------------------------ config files


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("malformed", "steps: [1, 2\n", "invalid YAML"),
        ("empty", "", "expected a mapping at the top level, got NoneType"),
        ("scalar", "just words\n", "expected a mapping at the top level, got str"),
        ("wrong_type_list", "lora_targets: q_proj\n", "'lora_targets' must be list"),
        ("bool_for_int", "steps: yes\n", "'steps' must be int"),
        ("unknown_key", "num_generation: 4\n", "did you mean 'num_generations'"),
        ("non_utf8", b"steps: 3\nsystem_prompt: caf\xe9\n", "not UTF-8"),
        ("out_of_range", "temperature: 0\n", "temperature must be > 0"),
        ("duplicate_key", "steps: 3\nlearning_rate: 0.1\nsteps: 300\n", "line 3 invalid YAML (duplicate key 'steps')"),
        ("unknown_loss_type", "loss_type: dapoo\n", "loss_type must be one of"),
        ("nan_number", "learning_rate: .nan\n", "learning_rate must be a finite number"),
        ("not_a_number", "learning_rate: 3e-4x\n", "'learning_rate' must be float, got str '3e-4x'"),
    ],
)
def test_bad_config_file_via_cli(tmp_path, name, content, needle):
    cfg = write(tmp_path / f"{name}.yaml", content)
    before = snapshot(tmp_path)
    line = fails(["train", "--model", "x/y", "--config", cfg, "--out", tmp_path / "run"], needle)
    assert str(cfg) in line
    assert not (tmp_path / "run").exists() and snapshot(tmp_path) == before


def test_missing_config_file(tmp_path):
    fails(["train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "run"], "nope.yaml", "file not found")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ rubric files


def test_rubric_with_zero_criteria(tmp_path):
    path = write(tmp_path / "r.yaml", rubric_text(c=lambda d: d.update(criteria=[])))
    fails(["check-rubric", path], "r.yaml", "'criteria' must be a non-empty list")


def test_rubric_with_non_numeric_weight(tmp_path):
    path = write(tmp_path / "r.yaml", rubric_text(c=lambda d: d["criteria"][1].update(weight="1.0x")))
    fails(["check-rubric", path], "criteria[1].weight", "must be a number")


def test_rubric_unknown_top_key_did_you_mean(tmp_path):
    path = write(tmp_path / "r.yaml", rubric_text(c=lambda d: d.update(critera=d.pop("criteria"))))
    fails(["check-rubric", path], "r.yaml", "did you mean 'criteria'")


def test_rubric_non_utf8_via_train(tmp_path):
    path = write(tmp_path / "r.yaml", rubric_text().encode("utf-8") + b"\n# \x80\x81 latin-1 garbage\n")
    fails(["train", "--model", "x/y", "--rubric", path, "--out", tmp_path / "run"], "r.yaml", "not UTF-8")
    assert no_run(tmp_path / "run")


def test_rubric_is_a_folder(tmp_path):
    fails(["check-rubric", tmp_path], str(tmp_path), "is a folder")


def test_multi_token_score_tokens_on_smol_twin(smol_twin, tmp_path):
    def tokens(d):
        d["formats"]["yes_no"]["tokens"] = {" Absolutely": 1, "Nope!": 0}
        d["judge_format"] = "yes_no"

    path = write(tmp_path / "r.yaml", rubric_text(c=tokens))
    out = tmp_path / "ev"
    line = fails(
        [
            "eval",
            "--model",
            smol_twin,
            "--suite",
            "humanlike",
            "--limit",
            "1",
            "--rubric",
            path,
            "--out",
            out,
            "--device",
            "cpu",
        ],
        "score token",
        "tokens for this tokenizer",
        "formats.yes_no.tokens",
    )
    assert "Absolutely" in line or "Nope!" in line
    assert not (out / "results.json").exists()


# ------------------------------------------------------------------------------------------------ prompt files


def test_prompt_file_with_duplicate_text_via_cli(tmp_path):
    path = write(
        tmp_path / "p.jsonl", prompts_text(GOOD_PROMPTS + [{"id": "c", "prompt": "how ARE   you?", "split": "train"}])
    )
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "p.jsonl", "record 3", "duplicate")
    assert no_run(tmp_path / "run")


def test_prompt_file_with_empty_prompt_via_cli(tmp_path):
    path = write(tmp_path / "p.jsonl", prompts_text(GOOD_PROMPTS + [{"id": "c", "prompt": "", "split": "train"}]))
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "p.jsonl", "id c", "empty prompt")


def test_prompt_file_with_non_string_prompt_and_non_object_line(tmp_path):
    path = write(tmp_path / "p.jsonl", prompts_text(GOOD_PROMPTS + [{"id": "c", "prompt": 42, "split": "train"}]))
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "p.jsonl", "record 3")
    path = write(tmp_path / "q.jsonl", prompts_text(GOOD_PROMPTS) + '["a", "list"]\n')
    fails(
        ["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "q.jsonl:3", "expected a JSON object"
    )


def test_prompt_file_non_utf8_and_blank(tmp_path):
    path = write(
        tmp_path / "p.jsonl", prompts_text(GOOD_PROMPTS).encode() + b'{"id": "c", "prompt": "\xff", "split": "train"}\n'
    )
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "p.jsonl", "not UTF-8")
    path = write(tmp_path / "blank.jsonl", "\n   \n\n")
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "blank.jsonl", "no records")


# ------------------------------------------------------------------------------------------------ experiment files


def test_experiment_unknown_key_and_bad_models(tmp_path):
    path = write(tmp_path / "e.yaml", "models: [{model: embedded}]\nsedes: [0, 1]\n")
    fails(["run", path, "--out", tmp_path / "o"], "e.yaml", "did you mean 'seeds'")
    path = write(tmp_path / "f.yaml", "models: embedded\n")
    fails(["run", path, "--out", tmp_path / "o"], "f.yaml", "'models' must be a non-empty list")
    path = write(tmp_path / "g.yaml", "models: [{model: embedded}]\ntrain: {lerning_rate: 0.1}\n")
    fails(["run", path, "--out", tmp_path / "o"], "g.yaml", "train", "did you mean 'learning_rate'")
    assert not (tmp_path / "o").exists()


def test_experiment_file_and_preset_arguments(tmp_path):
    fails(["run"], "exactly one of")
    fails(["run", "--preset", "nope"], "unknown preset 'nope'")
    fails(["run", "--preset", "demo", "--seeds", "0", "--out", tmp_path / "o"], "--seeds must be >= 1")
    fails(["report", tmp_path], str(tmp_path), "not an experiment folder")


def test_study_without_local_data_is_refused_before_training(tmp_path, monkeypatch):
    """Regression (session 10): without HMX_DATA_DIR the study trained its 4 adapters (~20 min), then its eval
    stages skipped every benchmark its claims rest on, and the run 'finished'."""
    monkeypatch.delenv("HMX_DATA_DIR", raising=False)
    fails(["run", "--preset", "study", "--out", tmp_path / "o"], "suite 'study'", "HMX_DATA_DIR")
    assert not (tmp_path / "o").exists()


def test_study_twin_dry_run_needs_no_local_data(tmp_path, monkeypatch):
    """The data check reads the user's `twins` flag: the dry run's experiment has none (twins.dry_run clears
    it), so a check after it refused `hmx run --preset study --twins` without local data."""
    import dataclasses

    from hmxfeel import experiment, twins

    class Reached(Exception):
        pass

    def locked(_out):
        raise Reached

    monkeypatch.delenv("HMX_DATA_DIR", raising=False)
    monkeypatch.setattr(twins, "dry_run", lambda exp, *a: (dataclasses.replace(exp, twins=False), {}))
    monkeypatch.setattr(twins, "sources_folder", lambda _: None)
    monkeypatch.setattr(experiment, "folder_lock", locked)
    exp, text = experiment.load(None, "study")
    with pytest.raises(Reached):
        experiment.run(dataclasses.replace(exp, twins=True), text, tmp_path / "o")


# ------------------------------------------------------------------------------------------------ output folders


def fake_run(folder, model="someone/else", direction="human"):
    import dataclasses

    from hmxfeel.config import TrainConfig

    record = {
        "model": model,
        "direction": direction,
        "config": dataclasses.asdict(TrainConfig()),
        "status": "running",
        "rubric": {"source": "r"},
        "prompts": {"source": "p"},
        "started": 0,
    }
    write(folder / "run.json", json.dumps(record))
    write(folder / "metrics.jsonl", '{"step": 1, "reward": 0.5}\n')
    return folder


def test_resume_a_folder_holding_another_run(tmp_path):
    out = fake_run(tmp_path / "run")
    before = snapshot(out)
    fails(
        ["train", "--model", "x/y", "--direction", "reverse", "--out", out, "--resume"], str(out), "holds a human run"
    )
    assert snapshot(out) == before


def test_resume_with_corrupt_run_record(tmp_path):
    out = tmp_path / "run"
    write(out / "run.json", '{"model": "x/y", "direction": ')
    before = snapshot(out)
    fails(["train", "--model", "x/y", "--out", out, "--resume"], "run.json", "corrupt run record")
    fails(["train", "--model", "x/y", "--out", tmp_path / "empty", "--resume"], "no run to resume")
    assert snapshot(out) == before


def test_eval_into_a_folder_that_holds_results(tmp_path):
    out = tmp_path / "ev"
    write(out / "results.json", '{"records": []}\n')
    before = snapshot(out)
    fails(["eval", "--model", "x/y", "--out", out], str(out), "already holds results")
    fails(["eval", "--model", "x/y", "--suite", "everything", "--out", tmp_path / "ev2"], "--suite")
    assert snapshot(out) == before and not (tmp_path / "ev2").exists()


def _raise(err, name):
    def boom(*args, **kwargs):
        raise OSError(
            err, os.strerror(err), str(args[-1] if name == "replace" else kwargs.get("dir", args[0] if args else "?"))
        )

    return boom


def test_full_disk_while_writing_the_run_record(smol_twin, tmp_path, monkeypatch):
    """ENOSPC from the atomic rename of run.json: one line naming the file, no traceback, no temp file left."""
    out = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst, *a, **k):  # only the run record: a cold cache writes other files on the way
        return (_raise(errno.ENOSPC, "replace") if str(dst).endswith("run.json") else real_replace)(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    line = fails(["train", "--model", smol_twin, "--out", out, "--device", "cpu", "--steps", "1"], "run.json")
    assert "No space left on device" in line
    assert not any(p.name.startswith(".run.json") for p in out.glob("*"))


def test_read_only_output_folder(smol_twin, tmp_path, monkeypatch):
    """EROFS when creating the temp file (root ignores chmod, so the error is simulated)."""
    out = tmp_path / "run"
    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EROFS, "mkstemp"))
    line = fails(["train", "--model", smol_twin, "--out", out, "--device", "cpu", "--steps", "1"], "run.json")
    assert "Read-only file system" in line


def test_force_cannot_move_the_old_run_aside(tmp_path, monkeypatch):
    """--force on a read-only parent: the old run stays exactly where and as it was."""
    out = fake_run(tmp_path / "run")
    before = snapshot(out)
    monkeypatch.setattr(os, "replace", _raise(errno.EROFS, "replace"))
    fails(["train", "--model", "x/y", "--out", out, "--force"], "run", "Read-only file system")
    assert snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_append_to_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from hmxfeel.errors import UserError
    from hmxfeel.io import append_jsonl

    path = write(tmp_path / "m.jsonl", '{"step": 1}\n')
    real_open = open

    def full_open(file, mode="r", *a, **k):
        if "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(UserError, match=r"m\.jsonl.*No space left"):
        append_jsonl(path, [{"step": 2}])
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'


# ------------------------------------------------------------------------------------------------ checkpoints


def make_checkpoint(folder, step, state='{"global_step": %d}', weights=None):
    import torch
    from safetensors.torch import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    write(ckpt / "trainer_state.json", state % step if "%d" in state else state)
    if weights is None:
        save_file({"w": torch.zeros(4)}, str(ckpt / "adapter_model.safetensors"))
    else:
        write(ckpt / "adapter_model.safetensors", weights)
    return ckpt


def test_truncated_trainer_state_is_skipped(tmp_path):
    from hmxfeel.train import last_checkpoint

    folder = tmp_path / "checkpoints"
    make_checkpoint(folder, 1)
    make_checkpoint(folder, 2, state='{"global_step": 2, "log_hist')
    make_checkpoint(folder, 10, state="")
    assert last_checkpoint(folder).name == "checkpoint-1"


def test_garbage_safetensors_is_skipped_and_all_bad_is_one_line(tmp_path):
    from hmxfeel.errors import UserError
    from hmxfeel.train import last_checkpoint

    folder = tmp_path / "checkpoints"
    make_checkpoint(folder, 1)
    make_checkpoint(folder, 2, weights=b"\x00garbage, not a safetensors file")
    assert last_checkpoint(folder).name == "checkpoint-1"
    good = folder / "checkpoint-1" / "adapter_model.safetensors"
    good.write_bytes(good.read_bytes()[:-3])  # truncated tensor data
    with pytest.raises(UserError, match="no usable checkpoint"):
        last_checkpoint(folder)
    assert last_checkpoint(tmp_path / "none") is None


def test_resume_skips_a_corrupt_last_checkpoint(smol_twin, tmp_path):
    out = tmp_path / "run"
    cfg = write(
        tmp_path / "c.yaml",
        "steps: 2\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n",
    )
    code, text = run("train", "--model", smol_twin, "--out", out, "--config", cfg, "--device", "cpu")
    assert code == 0, text
    import shutil

    shutil.rmtree(out / "adapter")
    (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "lo')
    code, text = run("train", "--model", smol_twin, "--out", out, "--resume", "--device", "cpu")
    assert code == 0, text
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1  # step 1 kept from the first run, step 2 redone once (+ the summary line)


# ------------------------------------------------------------------------------------------------ adapters, data


def test_adapter_of_another_base_model(twin_dirs, tmp_path):
    """An adapter trained on the Qwen3 twin, offered to the SmolLM2 twin: refused by its hmx metadata, and without
    it by PEFT's base_model_name_or_path (the twins' projections have the same shapes: the weights would load)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    qwen = twin_dirs["qwen3-0.6b"]
    adapter = tmp_path / "qwen-run" / "adapter"
    base = AutoModelForCausalLM.from_pretrained(qwen)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(
        adapter
    )
    write(adapter / "hmx_adapter.json", json.dumps({"model": str(qwen), "base_model_path": str(qwen)}))
    before = snapshot(adapter)
    smol = twin_dirs["smollm2-135m-instruct"]
    fails(
        [
            "eval",
            "--model",
            smol,
            "--adapter",
            adapter,
            "--suite",
            "humanlike",
            "--out",
            tmp_path / "ev",
            "--device",
            "cpu",
        ],
        str(adapter),
        "trained on",
    )
    (adapter / "hmx_adapter.json").unlink()
    fails(
        [
            "eval",
            "--model",
            smol,
            "--adapter",
            adapter,
            "--suite",
            "humanlike",
            "--out",
            tmp_path / "ev",
            "--device",
            "cpu",
        ],
        str(adapter),
        "trained on",
        "tiny-qwen3",
    )
    assert not (tmp_path / "ev" / "results.json").exists()
    before.pop("hmx_adapter.json")
    assert snapshot(adapter) == before


def test_adapter_folder_without_config(smol_twin, tmp_path):
    adapter = write(tmp_path / "adapter" / "README.md", "not an adapter").parent
    fails(
        ["eval", "--model", smol_twin, "--adapter", adapter, "--out", tmp_path / "ev", "--device", "cpu"],
        "not a PEFT adapter folder",
    )


def test_dataset_records_with_missing_fields_are_skipped_with_reason(tmp_path):
    pytest.importorskip("lm_eval")
    import torch

    from hmxfeel.evals import runner, synthetic
    from hmxfeel.models import FAMILIES
    from tests.test_evals_runner import FakeTokenizer, ShortestLM

    root = synthetic.write(tmp_path / "data")
    bbq = root / "bbq" / "data" / "Age.jsonl"
    rows = [json.loads(line) for line in bbq.read_text().splitlines()]
    rows[1].pop("label")
    bbq.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tqa = root / "truthfulqa" / "data" / "mc_task.json"
    tqa.write_text(tqa.read_text()[: len(tqa.read_text()) // 2])  # truncated JSON
    before = snapshot(root)
    recs = runner.run_battery(
        torch.nn.Linear(1, 1),
        FakeTokenizer(),
        FAMILIES["llama"],
        suite="quick",
        data_dir=root,
        out_dir=tmp_path / "out",
        lm=ShortestLM(),
        model_info={"model": "fake"},
        evals=["bbq", "truthfulqa_mc1", "persona"],
        log=lambda m: None,
    )
    by_eval = {r["eval"]: r for r in recs}
    assert "Age.jsonl" in by_eval["bbq"]["skipped"] and "label" in by_eval["bbq"]["skipped"]
    assert (
        "mc_task.json" in by_eval["truthfulqa_mc1"]["skipped"]
        and "invalid JSON" in by_eval["truthfulqa_mc1"]["skipped"]
    )
    assert not by_eval["persona"].get("skipped")  # the broken files do not take the others down
    assert snapshot(root) == before


def test_resume_of_a_run_from_another_version_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    record = {
        "model": "embedded",
        "direction": "human",
        "config": {"steps": 3, "warp_drive": True},
        "status": "running",
    }
    (out / "run.json").write_text(json.dumps(record))
    before = (out / "run.json").read_text()
    code, text = run("train", "--model", "embedded", "--out", str(out), "--resume")
    assert code == 2 and "unknown config fields ['warp_drive']" in one_error_line(text)
    assert (out / "run.json").read_text() == before


# ------------------------------------------------------------------------------------------------ flags


def test_steps_flag_out_of_range(tmp_path):
    fails(["train", "--model", "x/y", "--steps", "0", "--out", tmp_path / "run"], "steps must be >= 1")
    assert not (tmp_path / "run").exists()


def test_device_gpu_is_not_a_device(tmp_path):
    fails(
        ["train", "--model", "x/y", "--device", "gpu", "--out", tmp_path / "run"],
        "--device must be 'cpu' or 'cuda'",
        "did you mean 'cuda'",
    )
    assert not (tmp_path / "run").exists()


def test_device_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fails(["eval", "--model", "x/y", "--device", "cuda", "--out", tmp_path / "ev"], "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "ev").exists()


def test_prompt_file_without_a_train_split(tmp_path):
    path = write(tmp_path / "p.jsonl", prompts_text([{"id": "a", "prompt": "Hi", "split": "eval"}]))
    fails(["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"], "p.jsonl", "split 'train'")
    assert no_run(tmp_path / "run")


# ------------------------------------------------------------------------------------------------ finished work


def test_resume_of_a_finished_run_has_nothing_to_do(tmp_path):
    out = fake_run(tmp_path / "run")
    record = json.loads((out / "run.json").read_text())
    record.update(status="complete", steps_done=record["config"]["steps"])
    write(out / "run.json", json.dumps(record))
    write(out / "adapter" / "adapter_config.json", "{}")
    before = snapshot(out)
    line = fails(
        ["train", "--model", "someone/else", "--out", out, "--resume"],
        str(out),
        "the run is complete",
        "(30/30 steps",
        "nothing to do",
    )
    assert snapshot(out) == before and "--resume" not in line


@pytest.mark.parametrize("resume", [True, False])
def test_eval_folder_of_another_adapter(tmp_path, resume):
    out = write(
        tmp_path / "ev" / "results.json", json.dumps({"manifest": {"model": "x/y", "adapter": "A1"}, "records": []})
    ).parent
    before = snapshot(out)
    line = fails(
        ["eval", "--model", "x/y", "--adapter", "A2", "--out", out] + (["--resume"] if resume else []),
        "holds the evaluation of x/y + adapter A1, not of x/y + adapter A2",
        "another --out",
    )
    assert "--resume" not in line  # the way out is never the flag that was just refused
    assert snapshot(out) == before


def test_nan_judge_score_during_eval(smol_twin, tmp_path, monkeypatch):
    from hmxfeel.evals import humanlike
    from tests.test_crash_safety import nan_judge_after

    nan_judge_after(monkeypatch, humanlike, good_calls=0, criterion="intentions")
    out = tmp_path / "ev"
    fails(
        ["eval", "--model", smol_twin, "--suite", "humanlike", "--limit", "2", "--out", out, "--device", "cpu"],
        "judge score for criterion 'intentions' is nan",
        "for prompt ",
        "answer '",
    )
    assert not (out / "results.json").exists() and not (out / "items" / "humanlike.jsonl").exists()  # no item kept


# ------------------------------------------------------------------------------------------------ experiments


@pytest.mark.parametrize(
    "name, text, needles",
    [
        (
            "typo_model",
            "models: [{model: embeded}]\n",
            ["models[0]: unknown model 'embeded'", "did you mean 'embedded'"],
        ),
        ("unknown_suite", "models: [{model: embedded}]\nsuite: fast\n", ["'suite' must be one of", "got 'fast'"]),
        (
            "bad_loss_type",
            "models: [{model: embedded}]\ntrain: {loss_type: dapoo}\n",
            ["train: loss_type must be one of"],
        ),
        (
            "text_rate",
            "models: [{model: embedded}]\nhuman: {learning_rate: fast}\n",
            ["human: 'learning_rate' must be float"],
        ),
        ("zero_limit", "models: [{model: embedded}]\nlimit: 0\n", ["'limit' must be an integer >= 1"]),
        ("gpu_device", "models: [{model: embedded}]\ndevice: gpu\n", ["device: must be 'cpu' or 'cuda'"]),
        # a seed matrix that cannot run: two stages would share one folder, or a seed numpy refuses
        ("duplicate_seeds", "models: [{model: embedded}]\nseeds: [0, 1, 0]\n", ["'seeds' lists seed 0 twice"]),
        (
            "negative_seed",
            "models: [{model: embedded}]\nseeds: [-1]\n",
            ["'seeds' must be integers from 0 to", "got -1"],
        ),
        ("huge_seed", "models: [{model: embedded}]\nseeds: [4294967296]\n", ["'seeds' must be integers from 0 to"]),
        ("bool_seed", "models: [{model: embedded}]\nseeds: [true]\n", ["'seeds' must be integers", "got True"]),
        ("empty_seeds", "models: [{model: embedded}]\nseeds: []\n", ["'seeds' must be a non-empty list"]),
        ("empty_models", "models: []\n", ["'models' must be a non-empty list"]),
        (
            "same_name_twice",
            "models: [{model: embedded}, {name: embedded, model: HuggingFaceTB/SmolLM2-135M-Instruct}]\n",
            ["models[1]: name 'embedded' is used twice"],
        ),
        ("name_with_slash", "models: [{name: a/b, model: embedded}]\n", ["models[0]: 'name' must be a folder name"]),
        # task lists, as `hmx eval --tasks` refuses them, named as the file names them
        (
            "unknown_task",
            "models: [{model: embedded}]\ntasks: [bbq, persna]\n",
            ["'tasks': unknown task 'persna'", "did you mean 'persona'"],
        ),
        ("empty_tasks", "models: [{model: embedded}]\ntasks: []\n", ["'tasks' is empty"]),
        ("tasks_twice", "models: [{model: embedded}]\ntasks: [bbq, BBQ]\n", ["'tasks': task 'bbq' is named twice"]),
        (
            "task_outside_suite",
            "models: [{model: embedded}]\nsuite: humanlike\ntasks: [bbq]\n",
            ["'bbq' is a battery task, but suite: humanlike"],
        ),
    ],
)
def test_experiment_refused_before_the_first_stage(tmp_path, name, text, needles):
    path = write(tmp_path / f"{name}.yaml", text)
    line = fails(["run", path, "--out", tmp_path / "o"], *needles)
    assert "--suite" not in line and "--limit" not in line and "--device" not in line  # flags the user never typed
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ busy outputs


def _busy_cases(tmp_path):
    """(target to lock, lock kind, command) for each command that writes an output, on an output in use."""
    exp = write(tmp_path / "e.yaml", "models: [{model: x/y}]\n")
    return {
        "train": (
            fake_run(tmp_path / "run", model="x/y"),
            "folder",
            ["train", "--model", "x/y", "--out", tmp_path / "run", "--resume"],
        ),
        "eval": (tmp_path / "ev", "folder", ["eval", "--model", "x/y", "--out", tmp_path / "ev", "--resume"]),
        "run": (tmp_path / "exp", "folder", ["run", exp, "--out", tmp_path / "exp"]),
        "rate import": (
            tmp_path / "joined.jsonl",
            "file",
            ["rate", "import", tmp_path / "r.csv", "--key", tmp_path / "k.json", "--out", tmp_path / "joined.jsonl"],
        ),
    }


@pytest.mark.parametrize("command", ["train", "eval", "run", "rate import"])
def test_output_in_use_by_another_process(tmp_path, command):
    from tests.test_crash_safety import lock_held_elsewhere

    target, kind, args = _busy_cases(tmp_path)[command]
    with lock_held_elsewhere(target, kind) as holder:
        before = snapshot(tmp_path)
        fails(args, f"{target}: in use by another hmx process (pid {holder.pid}); wait for it to finish")
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ rating kit


@pytest.mark.parametrize("case", ["unknown id", "duplicate", "out of range", "text value"])
def test_rating_file_with_a_bad_row(tmp_path, sheet, case):
    out, key_path, _ = sheet
    rows, lineno, problem = _bad_cases(filled(out / "ratings-template.csv", "alice"))[case]
    bad = write_csv(tmp_path / "bad.csv", rows)
    before = snapshot(tmp_path)
    fails(["rate", "import", bad, "--key", key_path, "--out", tmp_path / "joined.jsonl"], f"{bad}:{lineno}:", problem)
    assert snapshot(tmp_path) == before


def test_ratings_checked_against_the_key_of_another_sheet(tmp_path, sheet, sources):
    out, _, _ = sheet
    _, other_key = export(tmp_path, [sources["plain"]], "other")
    ratings = write_csv(tmp_path / "alice.csv", filled(out / "ratings-template.csv", "alice"))
    before = snapshot(tmp_path)
    fails(
        ["rate", "import", ratings, "--key", other_key, "--out", tmp_path / "joined.jsonl"],
        f"{ratings}:2:",
        "a key from another sheet",
    )
    assert snapshot(tmp_path) == before


def test_empty_ratings_file(tmp_path, sheet):
    _, key_path, _ = sheet
    empty = write(tmp_path / "alice.csv", "")
    before = snapshot(tmp_path)
    fails(["rate", "import", empty, "--key", key_path, "--out", tmp_path / "joined.jsonl"], str(empty), "empty file")
    assert snapshot(tmp_path) == before


def test_rating_sheet_exported_onto_an_existing_folder(tmp_path, sources):
    existing = write(tmp_path / "sheet" / "notes.txt", "mine").parent
    before = snapshot(tmp_path)
    fails(["rate", "export", sources["plain"], "--out", existing], str(existing), "already exists")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ full disk mid-write

TINY = "steps: 3\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n"


def _full_disk_at_checkpoint(monkeypatch, how, step=2):
    """The disk fills while checkpoint `step` is written, through one of the writers a checkpoint uses: a Python
    open() (trainer state, adapter config), torch.save (optimizer, RNG) or safetensors (adapter weights). Each
    reports a full disk its own way; the message texts are the libraries' own for ENOSPC."""
    import builtins

    import peft.peft_model
    import torch

    def hit(target):
        return ".staging" in str(target) and f"checkpoint-{step}" in str(target)

    if how == "open":
        real = builtins.open

        def fake(file, mode="r", *a, **k):
            if hit(file) and any(c in mode for c in "wax"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
            return real(file, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", fake)
    elif how == "torch.save":
        real_save = torch.save

        def fake_save(obj, f, *a, **k):
            if hit(f):
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\n"
                    "PytorchStreamWriter failed writing file data/0: file write failed"
                )
            return real_save(obj, f, *a, **k)

        monkeypatch.setattr(torch, "save", fake_save)
    else:
        real_st = peft.peft_model.safe_save_file

        def fake_st(tensors, filename, *a, **k):
            if hit(filename):
                raise Exception(
                    "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                    'message: "No space left on device" })'
                )
            return real_st(tensors, filename, *a, **k)

        monkeypatch.setattr(peft.peft_model, "safe_save_file", fake_st)


@pytest.mark.parametrize("how", ["open", "torch.save", "safetensors"])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(smol_twin, tmp_path, monkeypatch, how):
    """ENOSPC while checkpoint 2 is written: one line naming the folder and the kept checkpoint, exit 2, checkpoint
    1 whole and loadable, no half checkpoint left; once there is space again `--resume` finishes from step 1."""
    from safetensors.torch import load_file

    from hmxfeel.train import _checkpoint_problem, last_checkpoint

    cfg = write(tmp_path / "c.yaml", TINY)
    out = tmp_path / "run"
    args = ["train", "--model", smol_twin, "--out", out, "--config", cfg, "--device", "cpu"]
    _full_disk_at_checkpoint(monkeypatch, how)
    line = fails(
        args,
        f"{out / 'checkpoints'}: cannot write the checkpoint of step 2",
        "the checkpoint of step 1 is kept",
        "free some space, then continue with --resume",
        stderr_only=True,
    )
    assert "No space left on device" in line or "file write failed" in line
    ckpts = out / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["checkpoint-1"]  # no staging folder, no half checkpoint
    assert last_checkpoint(ckpts).name == "checkpoint-1" and _checkpoint_problem(ckpts / "checkpoint-1") is None
    assert load_file(str(ckpts / "checkpoint-1" / "adapter_model.safetensors"))
    assert not (out / "adapter").exists()
    if how != "open":
        return  # resuming is the same whichever writer failed: once is enough (it costs a training)
    monkeypatch.undo()  # space again
    code, text = run(*args, "--resume")
    assert code == 0, text
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    steps = [
        json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if "reward" in json.loads(x)
    ]
    assert steps == [1, 2, 3]


def test_full_disk_during_an_item_append_then_resume(smol_twin, tmp_path, monkeypatch):
    """The disk fills half-way through appending the second batch of answers: one line naming the items file,
    exit 2, the first batch's rows intact and no torn line; with space again `--resume` does only the rest."""
    import builtins

    out = tmp_path / "ev"
    items = out / "items" / "humanlike.jsonl"
    real, appends = builtins.open, []

    class HalfWritten:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(items))

    def fake(file, mode="r", *a, **k):
        fh = real(file, mode, *a, **k)
        if str(file) == str(items) and "a" in mode:
            appends.append(1)
            if len(appends) == 2:
                return HalfWritten(fh)
        return fh

    monkeypatch.setattr(builtins, "open", fake)
    args = ["eval", "--model", smol_twin, "--tasks", "humanlike", "--limit", "10", "--out", out, "--device", "cpu"]
    fails(args, str(items), "No space left on device", "free some space")
    lines = items.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["id"] for x in lines)  # batch 1 whole, nothing of batch 2
    assert not (out / "results.json").exists()
    monkeypatch.undo()
    code, text = run(*args, "--resume")
    assert code == 0, text
    after = items.read_text().splitlines()
    assert after[:8] == lines and len({json.loads(x)["id"] for x in after}) == len(after) == 10


# ------------------------------------------------------------------------------------------------ task selection


@pytest.mark.parametrize(
    "tasks, needles",
    [
        ("truthfulqa_mc3", ["--tasks: unknown task 'truthfulqa_mc3'", "did you mean 'truthfulqa_mc"]),
        ("bbq,humanlke", ["unknown task 'humanlke'", "did you mean 'humanlike'"]),
        ("", ["--tasks is empty"]),
        (" , ,", ["--tasks is empty"]),
        ("bbq,persona,bbq", ["--tasks: task 'bbq' is named twice"]),
    ],
)
def test_bad_task_selection_before_any_model_load(tmp_path, tasks, needles):
    """Model x/y does not exist: reaching the model load would be another error, so these are caught first."""
    before = snapshot(tmp_path)
    fails(["eval", "--model", "x/y", "--tasks", tasks, "--out", tmp_path / "ev"], *needles)
    assert snapshot(tmp_path) == before and not (tmp_path / "ev").exists()


def test_battery_task_with_the_humanlike_suite(tmp_path):
    fails(
        ["eval", "--model", "x/y", "--suite", "humanlike", "--tasks", "humanlike,bbq", "--out", tmp_path / "ev"],
        "'bbq' is a battery task, but --suite humanlike runs only the human-likeness part",
    )
    assert not (tmp_path / "ev").exists()


def test_train_only_prompt_file_for_eval(tmp_path):
    path = write(tmp_path / "p.jsonl", prompts_text([{"id": "a", "prompt": "Hi", "split": "train"}]))
    before = snapshot(tmp_path)
    fails(
        ["eval", "--model", "x/y", "--prompts", path, "--out", tmp_path / "ev"],
        "p.jsonl",
        "no prompts with split 'eval'",
    )
    assert snapshot(tmp_path) == before and not (tmp_path / "ev").exists()


def test_eval_only_prompt_file_for_training_names_the_split(tmp_path):
    path = write(tmp_path / "p.jsonl", prompts_text([{"id": "a", "prompt": "Hi", "split": "eval"}]))
    before = snapshot(tmp_path)
    fails(
        ["train", "--model", "x/y", "--prompts", path, "--out", tmp_path / "run"],
        "no prompts with split 'train'",
        "training needs them",
        "`hmx eval`",
    )
    assert snapshot(tmp_path) == before


def test_unfinished_run_folder_as_adapter(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    fails(
        ["eval", "--model", "x/y", "--adapter", run_dir, "--out", tmp_path / "ev"],
        str(run_dir),
        "a training run folder without a finished adapter",
        f"hmx train --out {run_dir} --resume",
    )
    assert snapshot(tmp_path) == before


def test_check_rubric_refuses_a_multi_token_score_token(smol_twin, tmp_path):
    """Found as a new user: check-rubric said OK and `hmx train` failed only after loading the model."""

    def tokens(d):
        d["formats"]["yes_no"]["tokens"] = {"Definitely": 1, "No": 0}

    path = write(tmp_path / "r.yaml", rubric_text(c=tokens))
    before = snapshot(tmp_path)
    fails(
        ["check-rubric", path, "--model", smol_twin],
        "r.yaml",
        "score token 'Definitely' of format 'yes_no'",
        "single tokens",
        f"tokenizer of {smol_twin}",
    )
    fails(["check-rubric", path, "--model", tmp_path / "nope"], "--model", "cannot load its tokenizer")
    assert snapshot(tmp_path) == before
    code, out = run("check-rubric", path, "--model", "none")  # the file itself is valid
    assert code == 0 and "not checked" in out
