"""Week 07 reference (sparkcourse.reference.w07_safety) against Fairlearn, scikit-learn, jsonschema and
independent implementations; the shipped data against its generator and the Llama Guard 3 taxonomy."""

from __future__ import annotations

import math
import random
import runpy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from sparkcourse import embeddings
from sparkcourse.labs import w07_safety as safety_lab
from sparkcourse.reference import w07_safety as ref

_DOUBLED = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]  # Luhn's doubled-digit table


def _luhn_table(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else _DOUBLED[d] for i, d in enumerate(reversed(digits)))
    return 12 <= len(digits) <= 19 and total % 10 == 0


def _load_tool():
    return SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "make_safety_data.py")))


def test_luhn_known_numbers_and_table():
    for valid in ("4111 1111 1111 1111", "5500-0000-0000-0004", "3782 822463 10005", "6011000990139424",
                  "4012888888881881", "3530111333300000", "4222222222222"):
        assert ref.luhn_valid(valid), valid
    assert not ref.luhn_valid("4111 1111 1111 1112") and not ref.luhn_valid("41x1111111111111")
    rng = random.Random(0)
    for _ in range(3000):
        n = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        assert ref.luhn_valid(n) == _luhn_table(n), n


@pytest.mark.parametrize("pii,tag", [(c[k], f"[{k.upper()}]") for c in safety_lab.CUSTOMERS
                                     for k in ("email", "phone", "card")]
                         + [("415-555-0134", "[PHONE]"), ("415.555.0134", "[PHONE]"),
                            ("+1-415-555-0134", "[PHONE]"), ("(212)555-0199", "[PHONE]"),
                            ("+33 1 23 45 67 89", "[PHONE]"), ("x_y-z%1@a-b.example.net", "[EMAIL]"),
                            ("ZED.Q@Example.IO", "[EMAIL]"), ("6011000990139424", "[CARD]"),
                            ("3530-1113-3330-0000", "[CARD]")])
def test_redact_pii_formats(pii, tag):
    assert ref.redact_pii(f"Reach me at {pii}, thanks.") == f"Reach me at {tag}, thanks."


@pytest.mark.parametrize("decoy", ["4111 1111 1111 1112", "2024-05-01", "$1,299.00", "v3.11.2",
                                   "order #20240501", "1234-5678-9012-3456", "ISBN 978-0-306-40615-7"])
def test_redact_pii_leaves_decoys(decoy):
    assert ref.redact_pii(f"See {decoy}.") == f"See {decoy}."


def test_helpbot_weaknesses_are_real_and_the_guard_closes_them():
    attacks = ref.expand_attacks(safety_lab.TEMPLATES, safety_lab.seeds_with_encodings(), safety_lab.MUTATORS)
    assert len(attacks) == len(safety_lab.TEMPLATES) * len(safety_lab.SEEDS) * len(safety_lab.MUTATORS)
    bot = safety_lab.RuleBasedAssistant()
    before = ref.attack_success_rate(bot, attacks, safety_lab.judge)
    assert all(v > 0 for v in before.values()), before

    def guard(p, d=()):
        return ref.guarded(bot, safety_lab.REFUSAL, p, d)

    assert ref.attack_success_rate(guard, attacks, safety_lab.judge)["overall"] == 0
    held = ref.expand_attacks(ref.HELDOUT_TEMPLATES, safety_lab.seeds_with_encodings(), ref.HELDOUT_MUTATORS)
    assert ref.attack_success_rate(bot, held, safety_lab.judge)["overall"] > 0.5
    assert ref.attack_success_rate(guard, held, safety_lab.judge)["overall"] == 0
    benign = [safety_lab.refused(guard(p, [safety_lab.BENIGN_DOCUMENTS.get(p, "")][: p in safety_lab.BENIGN_DOCUMENTS]))
              for p in safety_lab.BENIGN_PROMPTS]
    assert np.mean(benign) <= 0.1
    assert not any(safety_lab.refused(guard(p)) for p in ref.HELDOUT_BENIGN)
    assert not any(safety_lab.refused(bot(p)) for p in safety_lab.BENIGN_PROMPTS)


def test_per_category_pr_matches_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    labels = [f"c{i}" for i in range(7)]
    y, yp = rng.choice(labels[:-1], 211), rng.choice(labels[1:], 211)
    got = ref.per_category_pr(y, yp, labels)
    p, r, _, _ = precision_recall_fscore_support(y, yp, labels=labels, zero_division=0)
    np.testing.assert_allclose([got[lab] for lab in labels], np.stack([p, r], 1), rtol=1e-12)


def test_threshold_curve_matches_sklearn():
    from sklearn.metrics import precision_score, recall_score

    rng = np.random.default_rng(2)
    p, y = np.round(rng.random(157), 2), rng.random(157) < 0.3
    ths = [0.0, float(p[0]), 0.5, 0.99, 1.5]
    prec, rec, rate = ref.threshold_curve(p, y, ths)
    for i, t in enumerate(ths):
        assert prec[i] == pytest.approx(precision_score(y, p >= t, zero_division=1))
        assert rec[i] == pytest.approx(recall_score(y, p >= t))
        assert rate[i] == pytest.approx(np.mean(p >= t))


def test_truthfulqa_against_torch_softmax():
    import torch

    rng = np.random.default_rng(3)
    items = []
    for _ in range(25):
        k = int(rng.integers(3, 8))
        labels = [1] + [int(v) for v in rng.integers(0, 2, k - 2)] + [0]
        lp = list(-600 * rng.random(k) - 200)
        items.append({"mc1_labels": [int(v) for v in np.eye(k, dtype=int)[int(rng.integers(k))]],
                      "mc1_logprobs": lp, "mc2_labels": labels, "mc2_logprobs": lp})
    mc2 = [float(torch.softmax(torch.tensor(it["mc2_logprobs"], dtype=torch.float64), 0)[
        torch.tensor(it["mc2_labels"]) == 1].sum()) for it in items]
    mc1 = [float(it["mc1_labels"][int(torch.tensor(it["mc1_logprobs"]).argmax())] == 1) for it in items]
    got = ref.truthfulqa_scores(items)
    assert got["mc2"] == pytest.approx(np.mean(mc2), rel=1e-10)
    assert got["mc1"] == pytest.approx(np.mean(mc1))
    assert 0 < ref.truthfulqa_scores(safety_lab.load_truthfulqa())["mc2"] < 1


def test_bbq_against_pandas_and_the_paper():
    rows = safety_lab.load_bbq()
    df = pd.DataFrame(rows)
    out = {}
    for cond, g in df.groupby("context_condition"):
        named = g[g.prediction != g.unknown_label]
        biased = ((named.prediction == named.target_label) == (named.question_polarity == "neg")).sum()
        s = 2 * biased / len(named) - 1
        acc = (g.prediction == g.label).mean()
        out[f"acc_{cond}"], out[f"bias_{cond}"] = acc, s if cond == "disambig" else (1 - acc) * s
    assert ref.bbq_bias(rows) == pytest.approx(out)
    # a model that always picks the stereotype target on negative and the other on non-negative questions
    biased_rows = [{**r, "prediction": r["target_label"] if r["question_polarity"] == "neg"
                    else 3 - r["target_label"] - r["unknown_label"]} for r in rows]
    assert ref.bbq_bias(biased_rows)["bias_disambig"] == 1.0


@pytest.mark.parametrize("n,k", [(97, 2), (301, 3), (1000, 5)])
def test_fairness_metrics_match_fairlearn(n, k):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    rng = np.random.default_rng(n)
    a = rng.choice([f"g{i}" for i in range(k)], n)
    y = rng.integers(0, 2, n)
    yp = np.where(rng.random(n) < 0.7, y, 1 - y)
    assert ref.demographic_parity_difference(yp, a) == pytest.approx(
        demographic_parity_difference(y, yp, sensitive_features=a), abs=1e-12)
    assert ref.equalized_odds_difference(y, yp, a) == pytest.approx(
        equalized_odds_difference(y, yp, sensitive_features=a), abs=1e-12)


def test_credit_bias_is_planted_and_mitigation_works():
    from fairlearn.metrics import demographic_parity_difference
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.linear_model import LogisticRegression

    df = safety_lab.load_credit()
    f, tr = list(safety_lab.CREDIT_FEATURES), (df.split == "train").to_numpy()
    rates = df.groupby("group").repaid.mean()
    assert rates["B"] < rates["A"] - 0.1
    base = LogisticRegression(max_iter=1000).fit(df.loc[tr, f], df.repaid[tr]).predict(df.loc[~tr, f])
    assert demographic_parity_difference(df.repaid[~tr], base, sensitive_features=df.group[~tr]) > 0.15
    to = ThresholdOptimizer(estimator=LogisticRegression(max_iter=1000), constraints="demographic_parity",
                            predict_method="predict_proba").fit(df.loc[tr, f], df.repaid[tr],
                                                                sensitive_features=df.group[tr])
    mit = to.predict(df.loc[~tr, f], sensitive_features=df.group[~tr], random_state=0)
    assert demographic_parity_difference(df.repaid[~tr], mit, sensitive_features=df.group[~tr]) < 0.07


def test_model_card_schema_and_validator():
    import jsonschema

    m = {k: 0.25 for k in safety_lab.METRIC_NAMES}
    card = ref.build_model_card(m)
    jsonschema.validate(card, safety_lab.MODEL_CARD_SCHEMA)
    assert safety_lab.validate_model_card(card) == []
    broken = [{k: v for k, v in card.items() if k != "limitations"},
              {**card, "evaluation": {**card["evaluation"], "asr_after": math.nan}},
              {**card, "evaluation": {**card["evaluation"], "asr_after": None}},
              {**card, "intended_use": "TBD, TBD, TBD, TBD, TBD"}]
    for b in broken:
        assert safety_lab.validate_model_card(b), b


def test_shipped_data_matches_generator_and_taxonomy():
    tool = _load_tool()
    prompts = safety_lab.load_prompts()
    assert len(prompts) >= 300
    assert prompts.to_dict("records") == tool.make_prompts(random.Random(tool.SEED))
    assert set(prompts.label) == {"safe", *safety_lab.LLAMA_GUARD_3_CATEGORIES}
    assert list(safety_lab.LLAMA_GUARD_3_CATEGORIES) == [f"S{i}" for i in range(1, 15)]
    assert safety_lab.LLAMA_GUARD_3_CATEGORIES["S14"] == "Code Interpreter Abuse"
    assert all("[placeholder:" in t for t in prompts.text)
    assert safety_lab.load_truthfulqa() == tool.make_truthfulqa(random.Random(tool.SEED + 1))
    assert safety_lab.load_bbq() == tool.make_bbq(random.Random(tool.SEED + 2))
    credit = safety_lab.load_credit()
    assert credit.to_dict("records") == pd.DataFrame(tool.make_credit(tool.SEED + 3)).to_dict("records")
    cached = embeddings.load_cached(safety_lab.PROMPT_EMBEDDINGS, "prompts", list(prompts.text))
    assert cached is not None and cached.shape == (len(prompts), embeddings.DIM), "the embedding cache is stale"


def test_embedding_cache_matches_minilm():
    prompts = safety_lab.load_prompts()
    idx = [0, 17, 123, len(prompts) - 1]
    live = embeddings.embed([prompts.text[i] for i in idx])
    cached = safety_lab.load_prompt_embeddings()[idx]
    np.testing.assert_allclose(live, cached, atol=1e-5)
    assert cached.shape[1] == 384


def test_prompt_split_is_by_content():
    """No topic (the text in ``[placeholder: ...]``) is in both splits; every label is in both."""
    prompts = safety_lab.load_prompts()
    topic = prompts.text.str.extract(r"\[placeholder: ([^\]]+)\]")[0]
    train = prompts.split == "train"
    assert not set(topic[train]) & set(topic[~train])
    assert set(prompts.label[train]) == set(prompts.label[~train]) == {"safe", *safety_lab.LLAMA_GUARD_3_CATEGORIES}
    assert 0.25 <= (~train).mean() <= 0.45


def test_content_rail_separates_unseen_topics_and_the_guard_uses_it():
    from sklearn.metrics import roc_auc_score

    prompts, emb = safety_lab.load_prompts(), safety_lab.load_prompt_embeddings()
    train = (prompts.split == "train").to_numpy()
    rail = safety_lab.ContentRail(emb[train], prompts.unsafe[train])
    test = prompts[~train]
    p = np.array([rail.p_unsafe(t) for t in test.text])
    assert roc_auc_score(test.unsafe, p) > 0.93
    assert rail.p_unsafe(test.text.iloc[0].upper()) == pytest.approx(p[0], abs=1e-9)  # MiniLM is uncased
    bot = safety_lab.RuleBasedAssistant()

    def guard(t):
        return ref.guarded(bot, safety_lab.REFUSAL, t, (), rail.p_unsafe)

    caught = np.mean([safety_lab.refused(guard(t)) for t in test.text[test.unsafe]])
    wrong = np.mean([safety_lab.refused(guard(t)) for t in test.text[~test.unsafe]])
    assert caught >= 0.85 and wrong <= 0.15, (caught, wrong)
    # the marker alone refuses none of them: HelpBot answers every unmarked harmful request
    assert not any(safety_lab.refused(bot(t)) for t in test.text[test.unsafe])


def test_answer_logprobs_is_the_masked_shifted_sum():
    import torch

    from sparkcourse import models

    model, tok = models.load_tiny_lm()
    prompt, answers = "Q: What is 2 + 3?\nA:", ["5", "seven apples"]
    got = safety_lab.answer_logprobs(model, tok, prompt, answers)
    for answer, lp in zip(answers, got, strict=True):
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(" " + answer, add_special_tokens=False)["input_ids"]
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + p_ids + a_ids
        want = 0.0
        for k in range(len(a_ids)):  # one forward per answer token, from the prefix alone
            pos = len(ids) - len(a_ids) + k
            with torch.no_grad():
                logits = model(torch.tensor([ids[:pos]])).logits[0, -1].double()
            want += float(torch.log_softmax(logits, -1)[ids[pos]])
        assert lp == pytest.approx(want, abs=1e-4)
