"""Blind rating kit: export answers as a sheet raters score without knowing where each answer came from, import
their ratings back, and summarise them (`hmx rate export / import / summary`).

Blind ratings are this project's measure of truth for "reads as more human-like": the self-judge is the very
reward the policy was trained on (so it can be gamed) and the lexical markers only count phrases. A rater gets
only SHEET_DIR: shuffled answers under opaque ids, the scales, a CSV template and an offline form. Everything
that identifies an answer (model, condition, seed, source, scores) goes to a separate KEY file outside that
folder and meets the ratings again only at import.

One module a step: `scales` (what is rated), `sources` (which answers), `sheet` (export), `ingest` (import),
`summary` (means, paired CIs, agreement), `tables` (the summary as tables and as the report's section).
"""

from hmxfeel.rating.ingest import import_ratings, load_key
from hmxfeel.rating.scales import Scale, Scales, load_scales
from hmxfeel.rating.sheet import default_key_path, export_sheet, render_form, scales_markdown
from hmxfeel.rating.sources import collect
from hmxfeel.rating.summary import load_joined, summarize
from hmxfeel.rating.tables import report_parts, report_section, summary_markdown, summary_tables

__all__ = [
    "Scale",
    "Scales",
    "collect",
    "default_key_path",
    "export_sheet",
    "import_ratings",
    "load_joined",
    "load_key",
    "load_scales",
    "render_form",
    "report_parts",
    "report_section",
    "scales_markdown",
    "summarize",
    "summary_markdown",
    "summary_tables",
]
