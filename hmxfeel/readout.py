"""The readout judge: the model reads an answer, and a linear readout of its own hidden states gives the grade.

Why: a 135M model asked "does this answer express feelings?" barely beats chance, and a likelihood contrast
rewards the assistant formulas ("I'm glad to help") that blind raters count as courtesy, not expression. The
model's hidden states on the answer do carry what raters see; a ridge readout fitted on blind-rated answers
(the packaged rated set's dev part, `hmxfeel/data/rated.jsonl`) turns them into one score per criterion.
It is a rubric-by-examples judge: the rubric's criteria are defined by rated answers instead of by a grading
question, and the model that judges is still the policy's own base model (adapter off), as in the paper.

The rated set is text, so any model fits its own readout on first use: features of the dev answers from its
own hidden states, one ridge per criterion, cached under the hmx cache with its sha256 (recorded in the judge
spec of every run and evaluation). `hmx train --model Qwen/Qwen3-4B` needs no new ratings.
"""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from hmxfeel import chat
from hmxfeel.errors import UserError
from hmxfeel.io import read_jsonl, read_text, read_yaml, sha256_text

RATED_SET = resources.files("hmxfeel") / "data" / "rated.jsonl"
SCALES = resources.files("hmxfeel") / "data" / "rating_scales.yaml"
ALPHAS = np.logspace(-1, 5, 25)  # ridge strengths tried by leave-one-out CV on the dev part


def load_rated(path=None, split: str | None = None) -> list[dict]:
    """Rated answers (prompt, answer, split, mean rating per scale); `split` = 'dev' / 'test' / None (all)."""
    rows = read_jsonl(path or RATED_SET, required=("prompt", "answer", "split", "mean"))
    return [r for r in rows if split is None or r["split"] == split]


def scale_ranges(path=None) -> dict[str, tuple[float, float]]:
    """{scale: (min, max)} of the blind-rating scales."""
    return {s["name"]: (float(s["min"]), float(s["max"])) for s in read_yaml(path or SCALES)["scales"]}


def model_fingerprint(model) -> str:
    """Identity of the weights the features come from (config + a sample of every base tensor's values), so a
    cached readout is never reused for another model, dtype or checkpoint. LoRA tensors are left out and PEFT's
    renamed keys normalised: the frozen judge reads the base model, adapter attached or not."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, p in model.state_dict().items():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        flat = p.detach().reshape(-1)[:64].float().cpu().numpy()
        h.update(name.encode() + str(p.dtype).encode() + flat.tobytes())
    return h.hexdigest()


def layer_indices(n_layers: int, fractions) -> list[int]:
    """Hidden-state indices (0 = embeddings, n_layers = last block) at the given fractions of depth."""
    return sorted({min(n_layers, max(1, round(f * n_layers))) for f in fractions})


@torch.inference_mode()
def answer_states(model, tokenizer, family, prompts: list[str], answers: list[str], batch_size: int = 8) -> np.ndarray:
    """Mean hidden state over each answer's tokens at every layer: [N, layers + 1, hidden] (0 = embeddings).

    The answer is read as the assistant's turn after the user's message (the chat template the model was tuned
    with), so its states carry the conversation, as when the model wrote it."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(answers), batch_size):
        ctx = [
            tokenizer.encode(chat.render(tokenizer, family, chat.messages(family, p)), add_special_tokens=False)
            for p in prompts[start : start + batch_size]
        ]
        ans = [tokenizer.encode(a, add_special_tokens=False) or [pad] for a in answers[start : start + batch_size]]
        seqs = [c + a for c, a in zip(ctx, ans)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :], mask[row, width - len(s) :] = torch.tensor(s), 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            output_hidden_states=True,
            logits_to_keep=1,
        )
        stacked = torch.stack(out.hidden_states, dim=1)  # [B, layers + 1, T, H]
        for row, a in enumerate(ans):
            rows.append(stacked[row, :, width - len(a) :].float().mean(1).cpu().numpy())
    return np.stack(rows).astype(np.float64)


def pool_layers(states: np.ndarray, fractions) -> np.ndarray:
    """Average of the chosen layers' answer means: [N, hidden]."""
    return states[:, layer_indices(states.shape[1] - 1, fractions)].mean(1)


def features(model, tokenizer, family, prompts, answers, fractions, batch_size: int = 8) -> np.ndarray:
    """The readout's input: answer-mean hidden states at the chosen fractions of depth, averaged: [N, hidden]."""
    return pool_layers(answer_states(model, tokenizer, family, prompts, answers, batch_size), fractions)


def fit(x: np.ndarray, targets: dict[str, np.ndarray]) -> dict:
    """One standardised ridge per target (strength by leave-one-out CV), folded back into raw-feature weights."""
    from sklearn.linear_model import RidgeCV

    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    weights, bias, alphas = [], [], []
    for name in targets:
        ridge = RidgeCV(alphas=ALPHAS).fit(z, targets[name])
        weights.append(ridge.coef_ / sd)
        bias.append(float(ridge.intercept_ - (ridge.coef_ * mu / sd).sum()))
        alphas.append(float(ridge.alpha_))
    return {"targets": list(targets), "weight": np.stack(weights), "bias": np.array(bias), "alpha": np.array(alphas)}


def readout_sha256(readout: dict) -> str:
    buf = io.BytesIO()
    np.savez(buf, weight=readout["weight"], bias=readout["bias"])
    return hashlib.sha256(buf.getvalue()).hexdigest()


def cache_path(model, fmt_key: str, rated_sha: str) -> Path:
    from hmxfeel.models import cache_dir

    key = hashlib.sha256(f"{model_fingerprint(model)}|{fmt_key}|{rated_sha}".encode()).hexdigest()[:24]
    return cache_dir() / "readouts" / f"{key}.npz"


def load_or_fit(model, tokenizer, family, fmt, targets: dict[str, str], batch_size: int = 8) -> tuple[dict, str]:
    """The readout for this model: from the cache, else fitted on the rated set's dev part and cached.
    `targets` maps each rubric criterion to the rating scale it is fitted to. Returns (readout, its sha256)."""
    rated_path = fmt.ratings or RATED_SET
    rated_sha = sha256_text(read_text(str(rated_path)))  # a missing / unreadable ratings file: one line
    fmt_key = json.dumps({"layers": list(fmt.layers), "targets": targets}, sort_keys=True)
    path = cache_path(model, fmt_key, rated_sha)
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            readout = {"targets": list(f["targets"]), "weight": f["weight"], "bias": f["bias"], "alpha": f["alpha"]}
        return readout, readout_sha256(readout)
    dev = load_rated(rated_path, "dev")
    missing = sorted({s for s in targets.values() if any(r["mean"].get(s) is None for r in dev)})
    if not dev or missing:
        raise UserError(
            f"{rated_path}: the readout needs dev-part answers rated on {missing or list(targets.values())}"
        )
    x = features(
        model, tokenizer, family, [r["prompt"] for r in dev], [r["answer"] for r in dev], fmt.layers, batch_size
    )
    readout = fit(x, {crit: np.array([r["mean"][s] for r in dev]) for crit, s in targets.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        targets=np.array(readout["targets"]),
        weight=readout["weight"],
        bias=readout["bias"],
        alpha=readout["alpha"],
    )
    tmp.replace(path)
    return readout, readout_sha256(readout)


def predict(readout: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted rating per target, on the rating scale."""
    pred = x @ readout["weight"].T + readout["bias"]
    return {name: pred[:, k] for k, name in enumerate(readout["targets"])}


def to_unit(pred: np.ndarray, lo: float, hi: float, sharpness: float) -> np.ndarray:
    """A predicted rating -> (0, 1), monotone and never flat: a logistic centred on the scale's midpoint. A
    clip would give ties at the ends, and GRPO's group-relative advantage needs every difference it can get."""
    return 1.0 / (1.0 + np.exp(-sharpness * (pred - (lo + hi) / 2) / (hi - lo)))
