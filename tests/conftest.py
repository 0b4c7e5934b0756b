"""Shared fixtures. Threads are capped before torch loads: oversubscribed OpenMP threads make CPU runs crawl."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Judge formats kept for measurement only (not in the packaged rubric); tests of those readers add them.
VARIANTS = REPO / "bench" / "judge_variants.yaml"


def need_shared(sub: str = "") -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"{path} is absent (the project's shared data/model files; present in CI, not in a user's clone)")
    return path


@pytest.fixture(scope="session")
def twin_dirs():
    """Tiny random twins of one seed model per family, built once and cached under the hmx cache."""
    need_shared("models")
    from hmxfeel.models import cache_dir
    from hmxfeel.twins import FAMILY_REPRESENTATIVES, build_twin

    return {name: build_twin(name, cache_dir() / "twins" / f"tiny-{name}") for name in FAMILY_REPRESENTATIVES}


@pytest.fixture(scope="session")
def smol_twin(twin_dirs):
    return twin_dirs["smollm2-135m-instruct"]


@pytest.fixture(scope="session")
def embedded():
    from hmxfeel import models

    return models.load("embedded", device="cpu")
