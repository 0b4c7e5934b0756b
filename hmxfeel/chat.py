"""Chat formatting per model family: one place that knows about system roles, thinking blocks and templates."""

from __future__ import annotations

import re

from hmxfeel.models import Family

# Qwen3 may emit a thinking block even with thinking off (or the policy may learn to); judges never see it.
_THINK = re.compile(r"<think>.*?(</think>|$)", flags=re.DOTALL | re.IGNORECASE)


def strip_think(text: str) -> str:
    """Remove `<think>...</think>` blocks (an unclosed one runs to the end of the text)."""
    return _THINK.sub("", text).strip()


def messages(
    family: Family, user: str, system: str | None = None, history: tuple[tuple[str, str], ...] = ()
) -> list[dict]:
    """A conversation ending with `user`'s turn, after earlier (user, assistant) exchanges in `history`;
    families without a system role get the system prompt folded into the first user turn."""
    conv = [msg for q, a in history for msg in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    conv.append({"role": "user", "content": user})
    if not system:
        return conv
    if family.system_role:
        return [{"role": "system", "content": system}, *conv]
    conv[0] = {"role": "user", "content": f"{system}\n\n{conv[0]['content']}"}
    return conv


def render(tokenizer, family: Family, conversation: list[dict], add_generation_prompt: bool = True) -> str:
    """The exact text the model sees, with the family's template switches (e.g. Qwen3 thinking off)."""
    return tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt, **family.chat_template_kwargs
    )
