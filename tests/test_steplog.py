"""The readable per-step training line (hmxfeel/steplog.py)."""

from hmxfeel.steplog import step_line

# One step's logs as TRL 1.16 hands them to callbacks (values as logged; some as strings).
LOGS = {
    "loss": "0.0004724",
    "reward": "0.3192",
    "reward_std": "0.04545",
    "completions/mean_length": "48",
    "rubric/feelings": "0.3153",
    "rubric/feelings_std": "0.08373",
    "rubric/intentions": 0.3057,
    "rubric/overall": "0.3192",
    "rubric/self_awareness": "0.3367",
    "kl": "0.009449",
    "step_time": "17.78",
}


def test_a_step_reads_as_one_line():
    line = step_line(LOGS, 3, 24)
    assert line == (
        "step 3/24 · reward 0.319 ± 0.045 · feelings 0.32 · intentions 0.31 · self_awareness 0.34 · len 48 · "
        "KL 0.0094 · 17.8 s/step · ETA 6m 13s"
    )
    assert "\n" not in line and "overall" not in line and "_std" not in line


def test_summary_rows_and_missing_fields():
    assert step_line({"train_runtime": 100.0, "train_loss": 0.1}, 24, 24) is None  # the end-of-training row
    assert step_line({"reward": 0.5}, 1, 2) == "step 1/2 · reward 0.500"
    assert step_line({**LOGS, "step_time": "2"}, 24, 24).endswith("2.0 s/step · ETA 0s")
