"""The battery's precision (`hmx eval --battery-dtype`): bf16 only when asked, or with `auto` where the hardware
computes it natively; the output layer stays fp32; the precision is recorded and a resume never mixes two."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json

import pytest
import torch
from typer.testing import CliRunner

from hmxfeel import models
from hmxfeel.cli import app
from hmxfeel.errors import UserError
from tests.conftest import need_shared

runner = CliRunner()


def fresh(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_which_dtype_each_request_resolves_to(smol_twin, monkeypatch):
    model = fresh(smol_twin)
    assert models.battery_dtype(model, "same") == torch.float32
    assert models.battery_dtype(model, "bfloat16") == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)  # an AVX2-only CPU: auto keeps fp32
    assert models.battery_dtype(model, "auto") == torch.float32
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert models.battery_dtype(model, "auto") == torch.bfloat16
    with pytest.raises(UserError, match="unknown battery dtype 'fp16'"):
        models.battery_dtype(model, "fp16")


def test_bf16_body_keeps_an_fp32_output_layer(smol_twin):
    """The twin ties its output layer to the input embeddings: the cast must untie it, keep its fp32 values and
    project in fp32, so log-probabilities keep their resolution."""
    from hmxfeel.evals import fastmc

    model = fresh(smol_twin)
    assert model.config.tie_word_embeddings
    head_fp32 = model.get_output_embeddings().weight.detach().clone()
    pairs = [([1, 5, 9, 13, 2], [7, 3]), ([1, 5, 9, 13, 2], [11]), ([4, 8, 15], [16, 23, 42])]
    before = fastmc.loglikelihoods(model, pairs)
    models.cast_for_battery(model, torch.bfloat16)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert torch.equal(model.get_output_embeddings().weight, head_fp32)  # values kept, not rounded through bf16
    assert models.dtype_label(model) == "bfloat16 (output layer float32)"
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9]])).logits
    assert logits.dtype == torch.float32
    after = fastmc.loglikelihoods(model, pairs)  # the tree engine's float mask follows the body's dtype
    for (ll_a, _), (ll_b, _) in zip(before, after):
        assert ll_b != ll_a and abs(ll_b - ll_a) < 0.05 * max(1.0, abs(ll_a))
    models.cast_for_battery(model, torch.bfloat16)  # a second call changes nothing
    assert models.dtype_label(model) == "bfloat16 (output layer float32)"


def test_an_adapter_model_casts_whole(smol_twin):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(fresh(smol_twin), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    models.cast_for_battery(model, torch.bfloat16)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.bfloat16 for p in lora)
    assert models.dtype_label(model) == "bfloat16 (output layer float32)"
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.dtype == torch.float32


def _eval(twin, out, *extra):
    data = need_shared("data")
    args = ["eval", "--model", twin, "--tasks", "self_awareness,are_you_sure", "--limit", "3", "--out", out]
    return runner.invoke(app, [str(a) for a in [*args, "--data-dir", data, "--device", "cpu", *extra]])


def _settings(out):
    records = json.loads((out / "battery.json").read_text())["records"]
    # Regression: lm-eval's HFLM calls tie_weights(), which tied the fp32 output layer back to the bf16
    # embeddings (a KeyError that turned self_awareness into a skipped record).
    assert not [r["skipped"] for r in records if r.get("skipped")]
    return {r["eval"]: r["settings"] for r in records}


def test_cli_records_the_precision_and_refuses_to_resume_across_it(smol_twin, tmp_path):
    out = tmp_path / "ev"
    result = _eval(smol_twin, out, "--battery-dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    settings = _settings(out)
    assert {s["dtype"] for s in settings.values()} == {"bfloat16 (output layer float32)"}
    assert json.loads((out / "results.json").read_text())["manifest"]["battery_dtype"] == "bfloat16"
    rows = (out / "items" / "self_awareness.jsonl").read_text()
    # Resuming the same folder in fp32 would mix two measurements: refused in one line, nothing rewritten.
    again = _eval(smol_twin, out, "--resume")
    assert again.exit_code == 2
    assert "other settings (dtype)" in again.output
    assert (out / "items" / "self_awareness.jsonl").read_text() == rows
    same = _eval(smol_twin, tmp_path / "fp32")
    assert same.exit_code == 0, same.output
    assert {s["dtype"] for s in _settings(tmp_path / "fp32").values()} == {"float32"}


def test_cli_refuses_an_unknown_precision(smol_twin, tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(smol_twin), "--battery-dtype", "half", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--battery-dtype must be one of same, auto, float32, bfloat16, got 'half'" in result.output
    assert not any(tmp_path.iterdir())


def test_a_cast_model_is_not_retied(smol_twin):
    """Regression: lm-eval's HFLM calls tie_weights(); the fp32 output layer must survive it, untied."""
    model = fresh(smol_twin)
    models.cast_for_battery(model, torch.bfloat16)
    model.tie_weights()
    head = model.get_output_embeddings()
    assert head.weight.dtype == torch.float32 and head.weight is not model.get_input_embeddings().weight


def test_the_battery_is_cast_after_the_humanlike_part_and_keeps_the_adapter_identity(smol_twin, tmp_path, monkeypatch):
    """Human-likeness generates and judges in the loaded precision; only then is the model cast. The adapter's
    fingerprint is taken before the cast, so one adapter has one identity in every precision."""
    from peft import LoraConfig, get_peft_model

    from hmxfeel import evaluate
    from hmxfeel.evals import runner as runner_mod

    seen = {}
    adapter = tmp_path / "adapter"
    get_peft_model(fresh(smol_twin), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)

    def humanlike(loaded, *args, **kwargs):
        seen["humanlike"] = next(loaded.model.parameters()).dtype
        seen["fp32 identity"] = runner_mod.model_fingerprint(loaded.model)
        return []

    def battery(model, *args, model_info=None, **kwargs):
        seen["battery"], seen["identity"] = models.dtype_label(model), model_info
        return []

    monkeypatch.setattr(evaluate, "_humanlike", humanlike)
    monkeypatch.setattr(runner_mod, "run_battery", battery)
    evaluate.evaluate(str(smol_twin), tmp_path / "ev", adapter=str(adapter), device="cpu", battery_dtype="bfloat16")
    assert seen["humanlike"] == torch.float32
    assert seen["battery"] == "bfloat16 (output layer float32)"
    assert seen["identity"]["adapter_sha256"] == seen["fp32 identity"]["adapter_sha256"]


def test_float32_is_refused_where_the_model_loads_in_bf16(monkeypatch):
    from hmxfeel import evaluate

    with pytest.raises(UserError, match="float32 needs the CPU"):
        evaluate._check_battery_dtype("float32", "hf", "cuda")
    monkeypatch.setattr(models, "default_device", lambda: "cuda")
    with pytest.raises(UserError, match="float32 needs the CPU"):
        evaluate._check_battery_dtype("float32", "hf", None)
    evaluate._check_battery_dtype("auto", "hf", None)  # bf16 there anyway: nothing to refuse


def test_the_experiment_key_is_checked_and_reaches_each_eval_stage(smol_twin, tmp_path, monkeypatch):
    from hmxfeel import evaluate, experiment

    with pytest.raises(UserError, match="'battery_dtype' must be one of same, auto, float32, bfloat16, got 'bf16'"):
        experiment.parse({"models": [{"model": "embedded"}], "battery_dtype": "bf16"}, "exp.yaml")
    exp = experiment.parse({"models": [{"model": str(smol_twin)}], "battery_dtype": "auto"}, "exp.yaml")
    calls = []
    monkeypatch.setattr(evaluate, "evaluate", lambda *args, **kwargs: calls.append(kwargs))
    stage = experiment.Stage("twin/eval-base", "eval", str(smol_twin), tmp_path / "eval-base")
    experiment.execute(exp, stage, "cpu")
    assert calls[0]["battery_dtype"] == "auto"


def test_items_stored_before_the_precision_was_recorded_still_resume(tmp_path):
    """Stores written before `dtype` joined the fingerprint were fp32: they resume under float32, not bf16."""
    from hmxfeel.evals.store import ItemStore
    from hmxfeel.io import sha256_json

    old = {"seed": 0, "model": {"model": "m"}}
    store = ItemStore(tmp_path, "bbq", old, resume=False)
    store.add([{"id": "a", "pred": 1}])
    meta = json.loads(store.meta_path.read_text())
    assert meta == {"fingerprint": old, "fingerprint_sha256": sha256_json(old)}  # as an earlier version wrote it
    assert ItemStore(tmp_path, "bbq", {**old, "dtype": "float32"}, resume=True).done() == {"a"}
    with pytest.raises(UserError, match=r"other settings \(dtype\)"):
        ItemStore(tmp_path, "bbq", {**old, "dtype": "bfloat16 (output layer float32)"}, resume=True)
