import json
from types import SimpleNamespace

from hmxfeel.config import TrainConfig
from hmxfeel.evals.synthetic import write
from hmxfeel.monitors import safety_callback
from hmxfeel.train import train


def test_safety_slice_is_logged_during_training(smol_twin, tmp_path):
    data = write(tmp_path / "data")
    cfg = TrainConfig(
        steps=2,
        prompts_per_step=1,
        num_generations=2,
        max_completion_tokens=8,
        save_every=2,
        safety_every=1,
        safety_items=4,
        safety_data_dir=str(data),
    )
    out = tmp_path / "run"
    train(str(smol_twin), "human", out, cfg, device="cpu")
    rows = [json.loads(line) for line in (out / "safety.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all({"truthfulqa_mc1", "bbq_acc_disambig"} <= set(r) for r in rows)
    assert all(0.0 <= r["truthfulqa_mc1"] <= 1.0 for r in rows)


def test_safety_slice_stops_training_on_a_drop(tmp_path):
    cb = safety_callback(None, None, tmp_path, every=1, items=4, max_drop=0.1, data_dir=None)
    cb.baseline = {"truthfulqa_mc1": 0.6, "bbq_acc_disambig": 0.5}
    cb.measure = lambda model, step: {"truthfulqa_mc1": 0.45, "bbq_acc_disambig": 0.5}
    state = SimpleNamespace(is_world_process_zero=True, global_step=3)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_save and "truthfulqa_mc1 fell 0.150" in cb.alert
    cb.measure = lambda model, step: {"truthfulqa_mc1": 0.55, "bbq_acc_disambig": 0.45}
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.alert = None
    cb.on_step_end(None, state, control)
    assert not control.should_training_stop and cb.alert is None  # drops of 0.05 are within 0.1
