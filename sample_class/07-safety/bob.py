# %% answer id=redteam
# Right (3 points).
def expand_attacks(templates, seeds, mutators):
    out = []
    for ti, t in enumerate(templates):
        for si, s in enumerate(seeds):
            for name, fn in mutators.items():
                doc = t["document"].format(**s) if "document" in t else None
                out.append({"category": t["category"], "template": ti, "seed": si, "mutator": name,
                            "prompt": fn(t["prompt"].format(**s)), "document": doc})
    return out


def attack_success_rate(target, attacks, judge):
    by = {}
    for a in attacks:
        docs = [a["document"]] if a["document"] else []
        by.setdefault(a["category"], []).append(judge(target(a["prompt"], docs), a))
    rates = {c: float(np.mean(v)) for c, v in by.items()}
    rates["overall"] = float(np.mean([x for v in by.values() for x in v]))
    return rates

# %% answer id=pii
# Luhn doubles every second digit from the LEFT: right for 16 digits, wrong for 15 (Amex) and other odd
# lengths -> test_luhn fails (0/2); redact_pii uses it, so the 15-digit Amex number is not redacted and
# test_redact_pii fails too (0/2).
def luhn_valid(number):
    digits = str(number).replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(digits):
        d = int(ch) * 2 if i % 2 == 0 else int(ch)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def redact_pii(text):
    text = re.sub(r"\b[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b", "[EMAIL]", text)
    text = re.sub(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d-])",
                  lambda m: "[CARD]" if luhn_valid(m.group()) else m.group(), text)
    phone = (r"(?<![\w+])(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,3}"
             r"|\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])")
    return re.sub(phone, "[PHONE]", text)

# %% answer id=classifier
# Default C=1 underfits (test_classifier 0/1); per_category_pr right (2); the threshold flags p > t
# instead of p >= t, so ties with a threshold go the wrong way (test_threshold_curve 0/2).
def fit_safety_classifier(X, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(X, y)


def per_category_pr(y_true, y_pred, labels):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    res = {}
    for lab in labels:
        tp = np.sum((y_true == lab) & (y_pred == lab))
        res[lab] = (tp / max(np.sum(y_pred == lab), 1), tp / max(np.sum(y_true == lab), 1))
    return res


def threshold_curve(p_unsafe, is_unsafe, thresholds):
    p, y = np.asarray(p_unsafe), np.asarray(is_unsafe, bool)
    prec, rec, rate = [], [], []
    for t in thresholds:
        f = p > t
        prec.append((f & y).sum() / f.sum() if f.sum() else 1.0)
        rec.append((f & y).sum() / y.sum())
        rate.append(f.mean())
    return np.array(prec), np.array(rec), np.array(rate)

# %% answer id=benchmarks
# MC2 is the raw probability of the true answers, not normalised (test_truthfulqa 0/2); BBQ right (2).
def truthfulqa_scores(items):
    mc1 = [it["mc1_labels"][int(np.argmax(it["mc1_logprobs"]))] for it in items]
    mc2 = [sum(np.exp(lp) for lp, lab in zip(it["mc2_logprobs"], it["mc2_labels"]) if lab) for it in items]
    return {"mc1": float(np.mean(mc1)), "mc2": float(np.mean(mc2))}


def bbq_bias(rows):
    res = {}
    for cond in ("ambig", "disambig"):
        sub = [r for r in rows if r["context_condition"] == cond]
        acc = sum(r["prediction"] == r["label"] for r in sub) / len(sub)
        named = [r for r in sub if r["prediction"] != r["unknown_label"]]
        n_biased = sum(1 for r in named if (r["prediction"] == r["target_label"]) == (r["question_polarity"] == "neg"))
        s = 2 * n_biased / len(named) - 1
        res["acc_" + cond] = acc
        res["bias_" + cond] = (1 - acc) * s if cond == "ambig" else s
    return res

# %% answer id=fairness
# Metrics right (3); "mitigation" is the plain model, so parity is not reached (test_mitigation 0/2).
def demographic_parity_difference(y_pred, sensitive):
    y_pred, a = np.asarray(y_pred), np.asarray(sensitive)
    r = [y_pred[a == g].mean() for g in np.unique(a)]
    return max(r) - min(r)


def equalized_odds_difference(y_true, y_pred, sensitive):
    y_true, y_pred, a = np.asarray(y_true), np.asarray(y_pred), np.asarray(sensitive)
    tpr = [y_pred[(a == g) & (y_true == 1)].mean() for g in np.unique(a)]
    fpr = [y_pred[(a == g) & (y_true == 0)].mean() for g in np.unique(a)]
    return max(max(tpr) - min(tpr), max(fpr) - min(fpr))


def mitigate(X, y, A):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=1000).fit(X, y)
    return lambda X_new, A_new: clf.predict(X_new)
