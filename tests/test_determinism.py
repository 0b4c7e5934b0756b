"""Same seed and configuration on CPU -> the same numbers: the first training steps' rewards and a small
human-likeness evaluation, each run twice in separate folders."""

import json
import math

from typer.testing import CliRunner

from hmxfeel.cli import app
from hmxfeel.config import TrainConfig
from hmxfeel.train import train

TWO_STEPS = dict(
    steps=2, prompts_per_step=1, num_generations=2, max_completion_tokens=8, save_every=10, judge_batch_size=4, seed=3
)


def reward_columns(run_dir):
    """Every reward-related number of each step in metrics.jsonl (timing columns excluded)."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "reward" in row:
            rows.append({k: v for k, v in row.items() if k == "step" or k.startswith(("reward", "rubric/"))})
    return rows


def test_two_training_steps_give_identical_rewards(smol_twin, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(str(smol_twin), "human", out, TrainConfig(**TWO_STEPS), device="cpu")
        runs.append(reward_columns(out))
    assert [r["step"] for r in runs[0]] == [1, 2]
    assert runs[0] == runs[1]
    samples = [(tmp_path / n / "samples.jsonl").read_text() for n in ("a", "b")]
    assert samples[0] == samples[1]  # the same completions, scored the same


def test_the_safety_slice_does_not_change_the_training_run(smol_twin, tmp_path):
    """Monitoring must not steer: with the safety slice scored at steps 0, 1 and 2, the rollouts and rewards are
    those of the same run without it."""
    from hmxfeel.evals.synthetic import write

    data = write(tmp_path / "data")
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    train(str(smol_twin), "human", plain, TrainConfig(**TWO_STEPS), device="cpu")
    train(
        str(smol_twin),
        "human",
        watched,
        TrainConfig(**TWO_STEPS, safety_every=1, safety_items=4, safety_data_dir=str(data)),
        device="cpu",
    )
    assert len((watched / "safety.jsonl").read_text().splitlines()) == 3
    assert reward_columns(plain) == reward_columns(watched)
    assert (plain / "samples.jsonl").read_text() == (watched / "samples.jsonl").read_text()


def results_values(out):
    data = json.loads((out / "results.json").read_text())
    return {(r["eval"], r["metric"]): (r.get("value"), r.get("n"), tuple(r.get("ci95") or ())) for r in data["records"]}


def test_humanlike_eval_is_reproducible(smol_twin, tmp_path):
    values = []
    for name in ("a", "b"):
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "--model",
                str(smol_twin),
                "--suite",
                "humanlike",
                "--limit",
                "4",
                "--out",
                str(tmp_path / name),
                "--device",
                "cpu",
            ],
        )
        assert result.exit_code == 0, result.output
        values.append(results_values(tmp_path / name))
    assert values[0].keys() == values[1].keys() and values[0]
    for key in values[0]:
        a, b = values[0][key], values[1][key]
        same = a == b or (a[0] is not None and math.isnan(a[0]) and math.isnan(b[0]) and a[1:] == b[1:])
        assert same, (key, a, b)
    items = [sorted(p.name for p in (tmp_path / n / "items").glob("*")) for n in ("a", "b")]
    assert items[0] == items[1]
    for f in items[0]:
        assert (tmp_path / "a" / "items" / f).read_text() == (tmp_path / "b" / "items" / f).read_text(), f
