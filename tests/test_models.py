"""Model resolution: Hub ids fail fast when the Hub cannot be reached, and a cached copy is used instead."""

import os
import time

import pytest

from hmxfeel import models
from hmxfeel.errors import UserError


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online mode, but the Hub endpoint is a closed local port: connections are refused at once."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")


def test_unreachable_hub_is_one_error_within_seconds(unreachable_hub):
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot be reached .* not in the local cache"):
        models.load("fake-org/no-such-model-xyz", device="cpu")
    assert time.monotonic() - start < 10


def test_unreachable_hub_loads_the_cached_copy(unreachable_hub, monkeypatch, tmp_path):
    import huggingface_hub

    snapshot = tmp_path / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--cached" / "refs").mkdir()
    (tmp_path / "models--org--cached" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert models.hub_source("org/cached") == str(snapshot)


def test_hub_ids_and_embedded_name_one_model():
    assert models.hub_id("embedded") == models.EMBEDDED_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.same_model("embedded", "huggingfacetb/smollm2-135m-instruct")
    assert not models.same_model("embedded", "Qwen/Qwen3-0.6B") and models.hub_id("/some/folder") is None


def test_no_bf16_judge_copy_when_torch_dispatch_is_capped_below_avx512():
    """Regression: under `ATEN_CPU_CAPABILITY=avx2` (how an AVX2-only CPU is approximated) `auto` still chose a bf16
    judge copy from /proc/cpuinfo's flags, which torch could not use natively there."""
    import subprocess
    import sys

    code = "from hmxfeel.models import cpu_has_fast_bf16; print(cpu_has_fast_bf16())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
