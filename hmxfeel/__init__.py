"""hmx-feel: rubric-based self-rewarded GRPO + LoRA for expressed feelings, intentions and self-awareness."""

__version__ = "0.1.0"
