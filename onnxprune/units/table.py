"""The one per-op rule table the channel analysis and the rewrite use: the channel rules of `rules.py`, each wrapped
for channel-last token tensors, plus the ops only transformers need (`rules_tokens.py`). Assembled here so neither
rule module imports the other's user."""
from __future__ import annotations

from .rules import RULES as CHANNEL_RULES
from .rules import OpRule
from .rules_tokens import token_rules

RULES: dict[str, OpRule] = {**CHANNEL_RULES, **token_rules(CHANNEL_RULES)}
