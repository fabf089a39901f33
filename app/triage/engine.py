"""classify(): one automaton pass over the normalised text, then scope, scores, emotion and priority."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from app.triage.hybrid import (CONTEXT_MESSAGES, URGENT_PROBABILITY, blend_emotion, decide, has_decimal_rating,
                               in_context, notice_spans, rule_signals)
from app.triage.learned import TextModel
from app.triage.model import (BANDS, INTENTS, TIERS, Evidence, IntentHit, PriorityContext, Triage)
from app.triage.normalize import detect_language, normalise
from app.triage.ruleset import (ADJACENT_NEGATOR, BREAKER, MASK, POST_NEGATOR, PUNCTUATION_CUE, REQUEST_NEGATOR, Ruleset,
                                default_ruleset)

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_DIGITS = frozenset("0123456789")
_DECIMAL_MARKS = frozenset(".,")
_MAX_EVIDENCE_PER_INTENT = 12
_NO_CONTEXT = PriorityContext()
_ANGRY, _NEGATIVE, _POSITIVE, _URGENT = range(4)


class _Breakers:
    """Conditional and question words found in a message, in order of their end offsets."""

    __slots__ = ("starts", "ends", "longest")

    def __init__(self, longest: int) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.longest = longest

    def covering(self, low: int, high: int) -> bool:
        """A breaker contains [low, high), as 不然 contains 不."""
        ends, starts = self.ends, self.starts
        index = bisect_left(ends, high)
        while index < len(ends) and ends[index] <= low + self.longest:
            if starts[index] <= low:
                return True
            index += 1
        return False

    def inside(self, low: int, high: int) -> bool:
        """A breaker lies within [low, high), as 就 in 不发货就差评."""
        ends, starts = self.ends, self.starts
        index = bisect_left(ends, low)
        while index < len(ends) and ends[index] <= high:
            if starts[index] >= low:
                return True
            index += 1
        return False


def _governed(start: int, end: int, text: str, scope: list[tuple[int, int, int]], scope_ends: list[int],
              breakers: _Breakers, marks: frozenset[str], windows: tuple[int, int, int, int],
              requests_only: bool = False) -> bool:
    """True when a negator or reassurance governs [start, end): same clause, close enough, no 'then'/'就' between.

    With requests_only, only a request negator ("不是要", "not asking for") counts: it governs every intent, where
    the other negators govern threats only ("没发货" is still a parcel not shipped)."""
    widest = max(windows)
    # Scope hits arrive ordered by end, so only a slice of them can be near enough to matter.
    low = bisect_left(scope_ends, start - widest)
    high = bisect_right(scope_ends, end + 2 * widest)
    # Nearest first: in a dense run of negators the closest one decides at once.
    for kind, scope_start, scope_end in reversed(scope[low:high]):
        if requests_only and kind != REQUEST_NEGATOR:
            continue
        english = text[scope_start].isascii()
        if kind == POST_NEGATOR:
            if scope_start < end:
                continue
            gap_start, gap_end = end, scope_start
            window = windows[3] if english else windows[2]
        else:
            if scope_start >= start or scope_end >= end:
                continue
            gap_start, gap_end = scope_end, start
            if kind == ADJACENT_NEGATOR:
                window = 1 if english else 0
            else:
                window = windows[1] if english else windows[0]
        if gap_end - gap_start > window:
            continue
        # A negator inside a conditional or question word ("不" in "不然", "是不是") negates nothing.
        if breakers.covering(scope_start, scope_end):
            continue
        if gap_end > gap_start:
            if not marks.isdisjoint(text[gap_start:gap_end]):
                continue
            if breakers.inside(gap_start, gap_end):
                continue
        return True
    return False


def _weak_cluster(spans: list[tuple[int, int, int]], weights: list[float], threshold: float, text: str,
                  windows: tuple[int, int]) -> float:
    """Best sum of distinct weak rules whose hits start within a window of each other (wider for English words).

    Weak phrases ("图片" + "不一样") only mean something together and close together; far apart in a
    long message they are two unrelated remarks.
    """
    weak = [(start, ref) for start, _end, ref in spans if weights[ref] < threshold]
    counts: dict[int, int] = {}
    best = total = 0.0
    left = 0
    for start, ref in weak:
        window = windows[1] if text[start].isascii() else windows[0]
        while weak[left][0] < start - window:
            old = weak[left][1]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
                total -= weights[old]
            left += 1
        if ref not in counts:
            counts[ref] = 0
            total += weights[ref]
        counts[ref] += 1
        best = max(best, total)
    return best


def priority_for(primary: str, *, emotion: str, urgent: bool, context: PriorityContext,
                 ruleset: Ruleset | None = None) -> int:
    """Priority of a message: the intent's base plus modifier points, capped inside the intent's tier band."""
    return _priority(ruleset or default_ruleset(), primary, emotion, urgent, context)


def _bounded(value: float) -> int:
    """A context count as a non-negative int; NaN, negatives and garbage count as nothing, huge values are capped."""
    try:
        return int(min(max(value, 0), 1e9))
    except (TypeError, ValueError):
        return 0


def _priority(rs: Ruleset, primary: str, emotion: str, urgent: bool, context: PriorityContext) -> int:
    low, high = BANDS[TIERS[primary]]
    modifiers = rs.modifiers
    points = modifiers["emotion"].get(emotion, 0)
    if urgent:
        points += modifiers["urgent"]
    if context is not _NO_CONTEXT:
        prior, vip, waiting = modifiers["prior_contact"], modifiers["vip_level"], modifiers["waiting"]
        points += min(prior["max"], prior["points"] * _bounded(context.prior_contacts))
        points += min(vip["max"], vip["points"] * _bounded(context.vip_level))
        points += min(waiting["max"], int(waiting["points_per_minute"] * _bounded(context.waiting_seconds) / 60))
    # The cap keeps every modifier inside the band: no amount of anger lifts a message into a higher tier.
    return max(low, min(high, rs.bases[primary] + points))


class _Scan:
    """What one automaton pass found: kept intent-layer and cue hits, scope words and conditional breakers."""

    __slots__ = ("layer", "cues", "scope", "scope_ends", "breakers", "rejected", "requests")

    def __init__(self, rs: Ruleset, norm: str) -> None:
        # Set when a phrase was found but refused as a rating because a decimal precedes it ("4.1星").
        self.rejected = False
        # A hit strictly inside a longer hit of its layer does not count ("黑猫投诉" is not also "投诉",
        # "不满意" is not "满意"). Hits arrive ordered by end, so kept hits have ascending starts and
        # containment is settled at the top of each stack.
        layer: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []
        cues: list[tuple[int, int, tuple[int, ...]]] = []
        scope: list[tuple[int, int, int]] = []
        scope_ends: list[int] = []
        breakers = _Breakers(rs.longest_breaker)
        breaker_starts, breaker_ends = breakers.starts, breakers.ends
        alnum, digits, decimal_marks = _ASCII_ALNUM, _DIGITS, _DECIMAL_MARKS
        rule_phrases = rs.rule_phrases
        length = len(norm)
        hits = rs.automaton.iter(norm) if rs.automaton is not None else ()
        for last, (size, check_left, check_right, layer_meaning, cue_meaning, scope_kinds, glued) in hits:
            end = last + 1
            start = end - size
            # Word boundaries on ASCII letters and digits only, so "refund什么时候到账" still matches "refund".
            if check_left and start:
                before = norm[start - 1]
                if before in alnum:
                    continue
                # "4.1星" and "4.1 stars" are a rating of four point one, not "1星"/"1 stars".
                if before in decimal_marks and start > 1 and norm[start - 2] in digits and norm[start] in digits:
                    self.rejected = True
                    continue
            if check_right and end < length and norm[end] in alnum:
                layer_meaning, cue_meaning, scope_kinds = glued
            if layer_meaning:
                _keep_layer_hit(layer, start, end, layer_meaning, norm, rule_phrases)
            if cue_meaning:
                _keep_cue_hit(cues, start, end, cue_meaning)
            if scope_kinds:
                for kind in scope_kinds:
                    if kind == BREAKER:
                        breaker_starts.append(start)
                        breaker_ends.append(end)
                    else:
                        scope.append((kind, start, end))
                        scope_ends.append(end)
        self.requests = any(kind == REQUEST_NEGATOR for kind, _start, _end in scope)
        self.layer, self.cues, self.scope, self.scope_ends, self.breakers = layer, cues, scope, scope_ends, breakers


def _keep_layer_hit(layer: list[tuple[int, int, tuple[tuple[int, int], ...]]], start: int, end: int,
                    meaning: tuple[tuple[int, int], ...], norm: str, rule_phrases: frozenset[str]) -> None:
    """Push an intent-layer hit onto the kept stack, settling containment with the hits before it."""
    while layer and layer[-1][0] >= start:
        layer.pop()
    # A mask and a rule hit that overlap: when the characters they share are themselves a rule phrase,
    # the mask owns them ("给一星" in "给一星期" is no rating: its 一星 belongs to 一星期).
    if meaning[0][0] == MASK:
        while (layer and start < layer[-1][1] < end and layer[-1][2][0][0] != MASK
               and norm[start:layer[-1][1]] in rule_phrases):
            layer.pop()
        if not layer or layer[-1][1] < end:
            layer.append((start, end, meaning))
    elif not layer or layer[-1][1] <= start or (
            layer[-1][1] < end and (layer[-1][2][0][0] != MASK or norm[start:layer[-1][1]] not in rule_phrases)):
        layer.append((start, end, meaning))


def _keep_cue_hit(cues: list[tuple[int, int, tuple[int, ...]]], start: int, end: int, meaning: tuple[int, ...]) -> None:
    """Push a cue hit; overlapping hits of one cue are one run ("!!!!!!" is four "!!!"): counted once."""
    while cues and cues[-1][0] >= start:
        cues.pop()
    if cues and cues[-1][1] > start and cues[-1][2] == meaning:
        cues[-1] = (cues[-1][0], end, meaning)
    elif not cues or cues[-1][1] < end:
        cues.append((start, end, meaning))


def _spans_by_intent(rs: Ruleset, scan: _Scan, norm: str, notices: list[tuple[int, int]],
                     negated: set[int]) -> dict[int, list[tuple[int, int, int]]]:
    """Rule hits grouped by intent index, without masked hits, hits inside pasted platform notices and order fields,
    and threats a negator governs (their intents are added to `negated`)."""
    windows = rs.windows
    rule_intent, rule_negatable, adjacent_chars = rs.rule_intent, rs.rule_negatable, rs.adjacent_chars
    scope, breakers = scan.scope, scan.breakers
    scope_present = bool(scope)
    per_intent: dict[int, list[tuple[int, int, int]]] = {}
    for start, end, meaning in scan.layer:
        if meaning[0][0] == MASK:
            continue
        if notices and any(low <= start and end <= high for low, high in notices):
            continue
        governed = None
        for _kind, ref in meaning:
            if not rule_negatable[ref]:
                if scan.requests and _governed(start, end, norm, scope, scan.scope_ends, breakers, rs.clause_marks,
                                               windows, requests_only=True):
                    negated.add(rule_intent[ref])
                    continue
            elif rule_negatable[ref]:
                if governed is None:
                    governed = bool(
                        (start and norm[start - 1] in adjacent_chars
                         and not breakers.covering(start - 1, start))
                        or (scope_present and _governed(start, end, norm, scope, scan.scope_ends, breakers,
                                                        rs.clause_marks, windows)))
                if governed:
                    negated.add(rule_intent[ref])
                    continue
            spans = per_intent.get(rule_intent[ref])
            if spans is None:
                per_intent[rule_intent[ref]] = [(start, end, ref)]
            else:
                spans.append((start, end, ref))
    return per_intent


def _intent_hits(rs: Ruleset, per_intent: dict[int, list[tuple[int, int, int]]], text: str, norm: str,
                 origin: tuple[int, ...] | None) -> list[IntentHit]:
    """Scored intents in precedence order, each with evidence sliced from the original text."""
    hits: list[IntentHit] = []
    weights, threshold, weak_rules = rs.rule_weight, rs.threshold, rs.weak_rules
    for intent_index in sorted(per_intent):
        spans = per_intent[intent_index]
        intent = INTENTS[intent_index]
        if len(spans) == 1:
            start, end, ref = spans[0]
            if weights[ref] < threshold:
                continue
            if origin is not None:
                start, end = origin[start], origin[end - 1] + 1
            hits.append(IntentHit(intent, TIERS[intent], weights[ref],
                                  (Evidence(rs.rules[ref], start, end, text[start:end]),)))
            continue
        # The first match of each rule explains it; repeats add length, not explanation.
        first: dict[int, tuple[int, int]] = {}
        for start, end, ref in spans:
            if ref not in first:
                first[ref] = (start, end)
        if weak_rules.isdisjoint(first):
            score = sum(weights[ref] for ref in first)
        else:
            score = sum(weights[ref] for ref in first if ref not in weak_rules)
            score += _weak_cluster(spans, weights, threshold, norm, rs.weak_windows)
        if score < threshold:
            continue
        evidence = []
        for ref, (start, end) in first.items():
            if origin is not None:
                start, end = origin[start], origin[end - 1] + 1
            evidence.append(Evidence(rs.rules[ref], start, end, text[start:end]))
        hits.append(IntentHit(intent, TIERS[intent], round(score, 3), tuple(evidence[:_MAX_EVIDENCE_PER_INTENT])))
    return hits


class _RulesReading:
    """What the rules read in one message: their intent hits, the intents they found negated, and the cues."""

    __slots__ = ("normalised", "hits", "negated", "cue_counts", "masked")

    def __init__(self, rs: Ruleset, text: str) -> None:
        self.normalised = normalise(text)
        norm = self.normalised.text
        scan = _Scan(rs, norm)
        negated: set[int] = set()
        self.hits = _intent_hits(rs, _spans_by_intent(rs, scan, norm, notice_spans(norm), negated), text, norm,
                                 self.normalised.origin)
        # A decimal rating ("評分4.1星") is the rules' finding that these words are no threat: the model may not
        # read one into them.
        rating = scan.rejected or has_decimal_rating(norm)
        if rating and not any(hit.intent == "bad_review_threat" for hit in self.hits):
            negated.add(INTENTS.index("bad_review_threat"))
        self.negated = frozenset(INTENTS[index] for index in negated)
        # A mask covered words here (another buyer's review, a past matter, a product name): worth knowing when
        # the same words push the model towards a threat.
        self.masked = rating or any(meaning[0][0] == MASK for _start, _end, meaning in scan.layer)
        cue_counts = [0] * (2 * PUNCTUATION_CUE)
        for _start, _end, kinds in scan.cues:
            for kind in kinds:
                cue_counts[kind] += 1
        if any(cue_counts[PUNCTUATION_CUE:]):
            _add_punctuation(cue_counts)
        self.cue_counts = cue_counts

    def signals(self) -> list[str]:
        """The reading as features for the learned model (see hybrid.py): it learns how far to trust each."""
        return rule_signals([hit.intent for hit in self.hits], self.negated, self.cue_counts[:PUNCTUATION_CUE],
                            masked=self.masked)


def read_rules(text: str, ruleset: Ruleset | None = None) -> list[str]:
    """The rules' reading of a message as model features; training computes them exactly as classify does."""
    return _RulesReading(ruleset or default_ruleset(), text).signals()


def classify(text: str, ruleset: Ruleset | None = None, *, context: Sequence[str] = (),
             priority_context: PriorityContext | None = None) -> Triage:
    """Triage one buyer message: intents with evidence, emotion, urgency, language, priority and queue.

    `context` holds the earlier buyer messages of the open conversation, oldest first; they are read only when the
    message alone shows no intent (a fragment such as "订单只有一个"), and never make it a P1 on their own.
    """
    return read(text, ruleset).triage(context=context, priority_context=priority_context)


def read(text: str, ruleset: Ruleset | None = None) -> "Reading":
    """A message read alone, by the rules and the model: what its triage in any conversation is made from."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    return Reading(text, ruleset or default_ruleset())


class Reading:
    """The rules' and the model's reading of one message alone. `triage` gives its triage, in a conversation or not:
    ingestion reads a fragment first alone and then, in its writer, with the conversation's earlier messages, and
    only the conversation's part is read the second time."""

    __slots__ = ("text", "ruleset", "rules", "prediction", "_alone")

    def __init__(self, text: str, rs: Ruleset) -> None:
        self.text = text
        self.ruleset = rs
        self.rules = _RulesReading(rs, text)
        model = rs.model
        self.prediction = (model.predict(self.rules.normalised.text, self.rules.signals()) if model is not None
                           else None)
        self._alone: list[IntentHit] | None = None

    def alone(self) -> list[IntentHit]:
        """The intents of the message alone, first the primary one; none when nothing was found."""
        if self._alone is None:
            reading, model = self.rules, self.ruleset.model
            if self.prediction is None or model is None:
                self._alone = list(reading.hits)
            else:
                normalised = reading.normalised
                self._alone = list(decide(reading.hits, self.prediction, model, self.text, normalised.origin,
                                          reading.negated, masked=reading.masked))
        return self._alone

    def triage(self, *, context: Sequence[str] = (), priority_context: PriorityContext | None = None) -> Triage:
        rs, reading, prediction = self.ruleset, self.rules, self.prediction
        hits = list(self.alone())
        if context and prediction is not None and rs.model is not None and not reading.hits:
            # No rule fired: the words may only make sense after the earlier messages ("订单只有一个").
            hits = _read_in_context(rs.model, hits, self.text, context)
        if not hits:
            hits.append(IntentHit("other", "P4", 0.0, ()))
        primary = hits[0].intent
        cue_counts = reading.cue_counts
        emotion = _emotion(cue_counts, rs.emotion_baseline.get(primary, "neutral"))
        urgent = cue_counts[_URGENT] > 0
        if prediction is not None:
            emotion = blend_emotion(emotion, cue_counts[_ANGRY], prediction)
            urgent = urgent or prediction.urgent >= URGENT_PROBABILITY
        priority = _priority(rs, primary, emotion, urgent, priority_context or _NO_CONTEXT)
        return Triage(primary, TIERS[primary], priority, tuple(hits), emotion, urgent,
                      detect_language(reading.normalised), rs.routes[primary], rs.id, rs.model_version)


def _read_in_context(model: TextModel, alone: list[IntentHit], text: str, context: Sequence[str]) -> list[IntentHit]:
    """The intent of a message read after the conversation's latest earlier messages (see hybrid.in_context)."""
    earlier = [message for message in context[-CONTEXT_MESSAGES:] if isinstance(message, str)]
    if not earlier:
        return alone
    joined = normalise("\n".join([*earlier, text])).text
    return in_context(alone, model.predict(joined), text)


def _add_punctuation(counts: list[int]) -> None:
    """Punctuation runs intensify the words: "很喜欢！！！" is delight, not anger, and no time pressure."""
    enthusiastic = counts[_POSITIVE] > counts[_ANGRY] + counts[_NEGATIVE]
    for kind in range(PUNCTUATION_CUE):
        if not enthusiastic or kind == _POSITIVE:
            counts[kind] += counts[PUNCTUATION_CUE + kind]


def _emotion(counts: list[int], baseline: str) -> str:
    angry, negative, positive = counts[_ANGRY], counts[_NEGATIVE], counts[_POSITIVE]
    if angry and angry >= positive:
        return "angry"
    if angry + negative > positive:
        return "negative"
    if positive > angry + negative:
        return "positive" if baseline == "neutral" or positive > 1 else baseline
    return baseline
