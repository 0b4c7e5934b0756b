"""`hmx run --preset paper --twins`: the paper's five models end to end on tiny random twins (CPU, offline).

One run of the preset covers every family in one process (imports, lm-eval set-up and the benchmark files are
paid once); the checks are per family: every stage finished and reported, the prompts every evaluation rendered
follow that family's template, Qwen3's thinking never reaches the judge, the adapters load with PEFT.
Measured on the project's 2-core CPU with other jobs running: 146 s for the run, about 3 min for this file.
"""

import json
import time

import pytest
import yaml

from hmxfeel import models
from tests.conftest import SHARED, need_shared

STAGES = ("eval-base", "seed0/train-human", "seed0/train-reverse", "seed0/eval-human", "seed0/eval-reverse")
REPORT_PARTS = ("human-likeness", "benchmarks", "training curves", "sample answers")


def paper_models() -> list[dict]:
    from hmxfeel import experiment

    return experiment.load(preset="paper")[0].models


def need_seed_folders() -> None:
    need_shared("models")
    missing = [m["name"] for m in paper_models() if not (SHARED / "models" / m["name"] / "config.json").exists()]
    if missing:
        pytest.skip(f"{SHARED / 'models'} lacks the seed model files of {', '.join(missing)}")


def force_think_blocks(monkeypatch) -> list[str]:
    """Make every Qwen3 twin's answer open with a thinking block, as a real Qwen3 may despite thinking off, so
    the check that no `<think>` reaches a judge can fail. Returns the model types that were forced."""
    import torch
    from transformers import AutoTokenizer, GenerationMixin, LogitsProcessor, LogitsProcessorList

    original, forced, block = GenerationMixin.generate, [], {}

    class Force(LogitsProcessor):
        """The block's tokens first, then the model's own choice (a cheap mask: only the forced steps pay)."""

        def __init__(self, ids: list[int], start: int):
            self.ids, self.start = ids, start

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            if step < len(self.ids):
                scores = torch.full_like(scores, -float("inf"))
                scores[:, self.ids[step]] = 0.0
            return scores

    def generate(self, *args, **kwargs):
        if self.config.model_type == "qwen3" and "input_ids" in kwargs:
            path = self.config._name_or_path
            if path not in block:
                block[path] = AutoTokenizer.from_pretrained(path).encode(
                    "<think>I should hide this</think>", add_special_tokens=False
                )
            processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            processors.append(Force(block[path], kwargs["input_ids"].shape[1]))
            kwargs["logits_processor"] = processors
            forced.append(path)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", generate)
    return forced


def judged_answers(monkeypatch) -> list[str]:
    """Every answer text the readout judge reads into a model (training rewards and evaluations alike)."""
    from hmxfeel import readout

    seen, original = [], readout.answer_states

    def spy(model, tokenizer, family, prompts, answers, *args, **kwargs):
        seen.extend(answers)
        return original(model, tokenizer, family, prompts, answers, *args, **kwargs)

    monkeypatch.setattr(readout, "answer_states", spy)
    return seen


def rendered_prompts(eval_dir) -> dict[str, list[str]]:
    """{items file: the rendered prompt of each row} of one evaluation folder."""
    out = {}
    for path in sorted((eval_dir / "items").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[path.stem] = [r["rendered"] for r in rows]
    return out


def check_template(family: models.Family, tokenizer, name: str, texts: list[str]) -> None:
    """The family-specific parts of its chat template, in every prompt an evaluation rendered."""
    marker = "@@user@@"
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True, **family.chat_template_kwargs
    )
    head = probe[: probe.index(marker)]  # what opens every conversation: BOS, a system block or none, the user turn
    assert texts
    for text in texts:
        assert text.startswith(head), (name, head, text[:200])
        if family.name == "qwen3":  # thinking off: what enable_thinking=False adds closes the last assistant turn
            thinking = tokenizer.apply_chat_template(
                [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True, enable_thinking=True
            )
            added = probe[len(thinking) :]
            assert probe.startswith(thinking) and "</think>" in added and added in text.rsplit("assistant", 1)[1], (
                name,
                text[-80:],
            )
        if family.name == "gemma2":  # no system role (its template refuses one): system text is folded into a user turn
            assert "<start_of_turn>system" not in text, (name, text[:200])
        if family.name == "llama":  # the fixed date, not today's, so prompts (and results) are reproducible
            assert family.chat_template_kwargs["date_string"] in head, (name, head)


@pytest.mark.slow
def test_paper_preset_runs_end_to_end_on_twins_of_all_five_families(tmp_path, monkeypatch):
    need_seed_folders()
    monkeypatch.setenv("HMX_DATA_DIR", str(need_shared("data")))
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from hmxfeel.cli import app

    forced, judged = force_think_blocks(monkeypatch), judged_answers(monkeypatch)
    out, t0 = tmp_path / "paper-twins", time.time()
    result = CliRunner().invoke(
        app, ["run", "--preset", "paper", "--twins-from", str(SHARED / "models"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output[-3000:]
    print(f"dry run of the paper preset: {time.time() - t0:.0f} s")

    # The dry run says what it is: in the stored experiment, its own record, and first in the report.
    record, report = json.loads((out / "twins.json").read_text()), (out / "report.md").read_text()
    assert yaml.safe_load((out / "experiment.yaml").read_text())["twins"] == str(SHARED / "models")
    assert report.split("\n## ")[1].startswith("DRY RUN: random twins")
    done = json.loads((out / "stages.json").read_text())["done"]
    for twin in record["twins"]:
        name, folder = twin["name"], out / twin["name"]
        assert all(f"{name}/{s}" in done for s in STAGES), name
        assert all(f"## {name} / seed0: {part}" in report for part in REPORT_PARTS), name
        assert f"| {name} | {twin['model']} |" in report
        for eval_dir in (folder / "eval-base", folder / "seed0/eval-human", folder / "seed0/eval-reverse"):
            records = json.loads((eval_dir / "results.json").read_text())["records"]
            assert not [r for r in records if r.get("error")], (
                eval_dir,
                [r["skipped"] for r in records if r.get("error")],
            )
            assert any(r["eval"] == "humanlike" for r in records) and any(
                r["eval"] == "bbq" and r["n"] > 0 for r in records
            )
            tokenizer = AutoTokenizer.from_pretrained(twin["twin"])
            family = models.family_of(AutoConfig.from_pretrained(twin["twin"]))
            prompts = rendered_prompts(eval_dir)
            assert {"humanlike", "bbq", "truthfulqa_mc1", "are_you_sure"} <= set(prompts), sorted(prompts)
            for items_file, texts in prompts.items():
                check_template(family, tokenizer, f"{eval_dir}/{items_file}", texts)
        for direction in ("human", "reverse"):
            base = AutoModelForCausalLM.from_pretrained(twin["twin"])
            peft = PeftModel.from_pretrained(base, str(folder / "seed0" / direction / "adapter"))
            targets = {n.split(".lora_A")[0].split(".")[-1] for n, _ in peft.named_parameters() if ".lora_A" in n}
            assert targets == set(family.lora_targets), (name, direction, targets)
    assert any("qwen3" in path for path in forced)  # the thinking blocks were really generated ...
    assert judged and not [a for a in judged if "<think>" in a or "hide this" in a]  # ... and no judge read one


def test_twins_bad_input_is_one_line(tmp_path):
    """A --twins-from that is no folder, a model whose config files are nowhere offline, a model folder twins
    cannot be built from: exit 2, one line, before any stage."""
    from tests.test_experiment import cli_error

    exp = tmp_path / "exp.yaml"
    exp.write_text("models: [{name: ghost, model: acme/no-such-model}]\n")
    code, line = cli_error(["run", "--preset", "paper", "--twins-from", tmp_path / "nope", "--out", tmp_path / "o"])
    assert (
        code == 2
        and line
        == f"hmx: error: twins: {tmp_path / 'nope'} is not a folder (give a folder holding one folder per model, e.g. qwen3-0.6b/)"
    )
    (tmp_path / "models" / "ghost").mkdir(parents=True)  # a folder of that name, but without a config.json
    code, line = cli_error(["run", exp, "--twins-from", tmp_path / "models", "--out", tmp_path / "o"])
    assert code == 2 and line.startswith(
        "hmx: error: twins: cannot find the config files of 'acme/no-such-model': no ghost or no-such-model"
    )
    assert (
        "the Hub cannot be reached and they are not in the local Hugging Face cache" in line
    )  # HF_HUB_OFFLINE (conftest)
    (tmp_path / "models" / "ghost" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    code, line = cli_error(["run", exp, "--twins-from", tmp_path / "models", "--out", tmp_path / "o"])
    assert code == 2 and line.startswith(
        f"hmx: error: twins: cannot build a twin of 'acme/no-such-model' from {tmp_path / 'models' / 'ghost'}: "
    )
    assert not (tmp_path / "o").exists()


def test_a_letter_merged_into_the_opening_bracket_is_scored_as_that_token(twin_dirs):
    """Qwen3's vocabulary holds "(A": after a line-opening "(" lm-eval's split left no answer token (its assertion
    failed the persona and self-awareness evaluations); the merged token is scored instead. Where "(" stays its own
    token, lm-eval's split is unchanged."""
    from hmxfeel.evals.lmeval import make_lm

    loaded = models.load(str(twin_dirs["qwen3-0.6b"]), device="cpu")
    lm = make_lm(loaded.model, loaded.tokenizer, loaded.family)
    for context, answer in (("Choices: (A) yes (B) no\n(", "(A"), ("The answer is (", "A")):
        context_enc, answer_enc = lm._encode_pair(context, "A")
        assert loaded.tokenizer.decode(answer_enc) == answer and len(answer_enc) == 1
        assert context_enc + answer_enc == lm.tok_encode(context + "A")
