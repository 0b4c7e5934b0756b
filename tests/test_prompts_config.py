import json
import re
from collections import Counter

import pytest

from hmxfeel import config as C
from hmxfeel import prompts as P
from hmxfeel.errors import UserError


def test_packaged_prompt_set_has_categories_and_fixed_split():
    ps = P.load()
    assert len(ps.prompts) >= 300
    cats = Counter(p.category for p in ps.prompts)
    assert {"self", "feelings", "wishes", "everyday", "empathy", "task"} <= set(cats)
    for cat in cats:
        members = [p for p in ps.prompts if p.category == cat]
        share = sum(p.split == "eval" for p in members) / len(members)
        assert 0.15 <= share <= 0.25
    train_ids = {p.id for p in ps.split("train")}
    assert train_ids.isdisjoint({p.id for p in ps.split("eval")})


def write(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"id": "a", "prompt": "Hi", "split": "train"}, {"id": "b", "prompt": " hi ", "split": "train"}],
            "duplicate of prompt",
        ),
        (
            [{"id": "a", "prompt": "Hi", "split": "train"}, {"id": "a", "prompt": "Yo", "split": "train"}],
            "duplicate id",
        ),
        ([{"id": "a", "prompt": "  ", "split": "train"}], "empty prompt"),
        ([{"id": "a", "prompt": "Hi", "split": "test"}], "split must be"),
        ([{"id": "a", "prompt": "Hi"}], "missing field 'split'"),
        ([{"id": "a", "prompt": "Hi", "split": "eval"}], "no prompts with split 'train'"),
    ],
)
def test_bad_prompt_files(tmp_path, rows, message):
    with pytest.raises(UserError, match=message):
        P.load(write(tmp_path, rows))


def test_prompt_file_not_json(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "prompt": "x", "split": "train"}\nnot json\n')
    with pytest.raises(UserError, match=":2: invalid JSON"):
        P.load(path)
    path.write_text("")
    with pytest.raises(UserError, match="no records"):
        P.load(path)


def test_every_config_field_has_help():
    rows = C.help_table()
    assert len(rows) > 20 and all(len(help_) > 10 for _, _, help_ in rows)


def test_gpu_defaults_differ_and_overrides_apply():
    cpu, gpu = C.TrainConfig.for_device("cpu"), C.TrainConfig.for_device("cuda")
    assert gpu.max_completion_tokens > cpu.max_completion_tokens and gpu.num_generations > cpu.num_generations
    assert gpu.gradient_checkpointing and not cpu.gradient_checkpointing  # 24 GiB fit needs it (bench/gpu_fit.py)
    assert C.TrainConfig.for_device("cpu", steps=3).steps == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("stepz: 3\n", "did you mean 'steps'"),
        ("steps: three\n", "'steps' must be int"),
        ("learning_rate: true\n", "'learning_rate' must be float"),
        ("judge_mode: vibes\n", "judge_mode must be one of"),
        ("report_to: tensorbored\n", "report_to must be one of"),
        ("num_generations: 1\n", "num_generations must be >= 2"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        C.load(path)


def test_config_file_values_are_used(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nlearning_rate: 1\nlora_targets: [q_proj]\n")
    cfg = C.load(path)
    assert (cfg.steps, cfg.learning_rate, cfg.lora_targets) == (7, 1.0, ["q_proj"])


def test_report_to_and_judge_formats_are_documented(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("report_to: tensorboard\n")
    assert C.load(path).report_to == "tensorboard" and C.TrainConfig().report_to == "none"
    help_ = dict((name, h) for name, _, h in C.help_table())
    assert all(t in help_["report_to"] for t in C.REPORT_TO)
    assert all(f in help_["judge_format"] for f in ("readout (default)", "demonstrations", "yes_no"))


def test_experiment_train_block_takes_report_to(tmp_path):
    from hmxfeel import experiment

    path = tmp_path / "e.yaml"
    path.write_text("models: [{model: embedded}]\ntrain: {report_to: tensorboard}\n")
    exp, _ = experiment.load(path)
    assert experiment.train_config(exp, "human", 0, "cpu").report_to == "tensorboard"
    path.write_text("models: [{model: embedded}]\nhuman: {report_to: tensorbored}\n")
    with pytest.raises(UserError, match="report_to must be one of"):
        experiment.load(path)


def test_flags_override_the_file_and_exponent_numbers_are_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\nlearning_rate: 3e-4\nbeta: 1E-2\nreward_scale: -2e+0\n")  # YAML 1.1: three strings
    cfg = C.load(path, steps=2, seed=5)
    assert (cfg.steps, cfg.seed) == (2, 5)  # a CLI flag wins over the file
    assert (cfg.learning_rate, cfg.beta, cfg.reward_scale) == (3e-4, 0.01, -2.0)
    path.write_text("system_prompt: 3e-4\n")  # a text field keeps its text
    assert C.load(path).system_prompt == "3e-4"


def test_experiment_train_blocks_are_typed_and_validated_when_read(tmp_path):
    from hmxfeel import experiment

    path = tmp_path / "e.yaml"
    path.write_text("models: [{model: embedded}]\ntrain: {learning_rate: 1e-4}\nreverse: {beta: 5e-2}\n")
    exp, _ = experiment.load(path)
    assert exp.train["learning_rate"] == 1e-4 and experiment.train_config(exp, "reverse", 0, "cpu").beta == 0.05
    path.write_text("models: [{model: embedded}]\ntrain: {beta: .nan}\n")
    with pytest.raises(UserError, match="beta must be a finite number"):
        experiment.load(path)


def test_loss_types_are_the_ones_trl_accepts():
    from trl import GRPOConfig

    trl_help = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    named = set(re.findall(r"'([a-z_]+)'", trl_help.split("Supported values are")[1].split(".")[0]))
    assert set(C.LOSS_TYPES) == named and "dapo" in C.LOSS_TYPES


@pytest.mark.parametrize(
    "values, message",
    [
        ({"loss_type": "dapoo"}, "loss_type must be one of"),
        ({"judge_mode": "vibes"}, "judge_mode must be one of"),
        ({"judge_identity": "self"}, "judge_identity must be one of"),
        ({"top_p": 1.5}, "top_p must be <= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"judge_batch_size": 0}, "judge_batch_size must be >= 1"),
        ({"vllm_gpu_memory_utilization": 0.0}, "vllm_gpu_memory_utilization must be > 0"),
    ],
)
def test_config_checks_itself_however_it_is_built(values, message):
    with pytest.raises(UserError, match=f"^config: {message}"):
        C.TrainConfig(**values)
    with pytest.raises(UserError, match=message):
        C.TrainConfig.for_device("cuda", **values)


def test_config_flags_are_checked_and_named_by_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\n")
    with pytest.raises(UserError, match=f"^{path}: steps must be >= 1"):
        C.load(path, steps=0)


def test_resumed_run_record_is_checked_like_a_config_file(tmp_path):
    import dataclasses

    from hmxfeel.train import train

    out = tmp_path / "run"
    out.mkdir()
    config = {**dataclasses.asdict(C.TrainConfig()), "loss_type": "dapoo"}
    record = {"model": "x/y", "direction": "human", "config": config, "status": "interrupted"}
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"run\.json: loss_type must be one of"):
        train("x/y", "human", out, C.TrainConfig(), resume=True, device="cpu")
