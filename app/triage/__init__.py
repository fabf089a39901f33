"""The triage core: pure text-in, decision-out classification of buyer messages (SPEC 2 and 7)."""

from app.triage.engine import Reading, classify, priority_for, read
from app.triage.model import (BANDS, INTENTS, TIERS, Evidence, IntentHit, PriorityContext, Triage)
from app.triage.ruleset import Ruleset, RulesetError, default_ruleset

__all__ = [
    "BANDS", "INTENTS", "TIERS", "Evidence", "IntentHit", "PriorityContext", "Ruleset", "RulesetError",
    "Reading", "Triage", "classify", "default_ruleset", "priority_for", "read",
]
