"""The tiny offline chat LM, its tokenizer and the course instruction / preference datasets."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: E402

from sparkcourse import datasets_course as dc  # noqa: E402
from sparkcourse import models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE_CAP = 3 * 2**20  # all shipped model and data files together
# Measured on the shipped model (sparkcourse/data/tiny_lm/README.md): every pre-training task 1.00, held-out
# tasks 0.00-0.05, and 0.62-0.68 on the held-out sample after FT_STEPS LoRA steps (LoRA seeds 0-2). The
# bounds leave a wide margin.
EVAL_ROWS = 40
PRETRAIN_FLOOR = 0.8
HELD_OUT_CEILING = 0.3
FT_STEPS, FT_GAIN = 100, 0.3


tool = SimpleNamespace(**runpy.run_path(str(ROOT / "tools" / "make_tiny_lm.py")))  # tools/ is not a package


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny():
    """The shipped model and tokenizer."""
    return models.load_tiny_lm()


@pytest.fixture(scope="module")
def test_split():
    """The instruction test split."""
    return dc.load_instruct("test")


@pytest.fixture(scope="module")
def held_out(test_split):
    """A fixed sample of the held-out tasks' test rows."""
    return _tasks(test_split, dc.HELD_OUT_TASKS).shuffle(seed=0).select(range(EVAL_ROWS))


def _tasks(ds, tasks):
    """Rows of ``ds`` whose task is in ``tasks``."""
    return ds.filter(lambda row: row["task"] in tasks)


# ---------------------------------------------------------------- files and loading


def test_shipped_files_under_size_cap():
    files = [p for d in (models.TINY_LM_PATH, dc.INSTRUCT_DIR) for p in d.iterdir() if p.is_file()]
    names = {p.name for p in files}
    for needed in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "train.jsonl",
        "test.jsonl",
    ):
        assert needed in names
    total = sum(p.stat().st_size for p in files)
    assert total <= SIZE_CAP, f"shipped model and data take {total:,} bytes, cap {SIZE_CAP:,}"


def test_loads_offline_with_auto_classes(no_network):
    model = AutoModelForCausalLM.from_pretrained(models.TINY_LM_PATH, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(models.TINY_LM_PATH, local_files_only=True)
    assert isinstance(model, LlamaForCausalLM)
    c = model.config
    assert 64 <= c.hidden_size <= 96 and 2 <= c.num_hidden_layers <= 4
    assert (c.num_attention_heads, c.num_key_value_heads) == (4, 2)
    assert 512 <= c.vocab_size <= 1024 and len(tok) == c.vocab_size
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<|bos|>", "<|end|>", "<|pad|>"}
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_load_tiny_lm_dtype_and_eval_mode(no_network):
    model, _ = models.load_tiny_lm(dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not model.training


def test_load_lm_is_tiny_outside_spark(monkeypatch, no_network, tmp_path):
    monkeypatch.setenv("SPARKCOURSE_PROFILE", "tiny")
    for source in (None, "some-org/some-hub-model"):
        model, tok = models.load_lm(source)
        assert model.config.hidden_size <= 96 and tok.eos_token == "<|end|>"
    local = shutil.copytree(models.TINY_LM_PATH, tmp_path / "my-model")
    loaded, _ = models.load_lm(local, dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64


# ---------------------------------------------------------------- chat template and generation


def test_chat_template_round_trips(tiny):
    _, tok = tiny
    messages = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|bos|><|user|>\nWhat is 12 + 30?<|end|><|assistant|>\n42<|end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    prompt = models.chat_prompt(tok, "What is 12 + 30?")
    assert text.startswith(prompt) and prompt.endswith("<|assistant|>\n")
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    assert tok.decode(ids[len(prompt_ids) :], skip_special_tokens=True).strip() == "42"


def test_generate_single_matches_batch(tiny):
    model, tok = tiny
    prompts = ["What is 12 + 30?", "Reverse: s p a r k", "How many bits does FP8 use?"]
    batch = models.generate_batch(model, tok, prompts, batch_size=2)
    assert [models.generate(model, tok, p) for p in prompts] == batch
    assert batch[2] == "8"


def test_pretraining_tasks_mostly_right(tiny, test_split):
    model, tok = tiny
    for task in dc.PRETRAIN_TASKS:
        score = dc.exact_match(model, tok, _tasks(test_split, [task]), n=EVAL_ROWS)
        assert score >= PRETRAIN_FLOOR, f"{task}: exact match {score:.2f} < {PRETRAIN_FLOOR}"


def test_held_out_tasks_leave_room_for_fine_tuning(tiny, held_out):
    model, tok = tiny
    score = dc.exact_match(model, tok, held_out)
    assert score <= HELD_OUT_CEILING, f"held-out exact match {score:.2f} is already near its ceiling"


def test_exact_match_accepts_chat_format_and_n(tiny):
    model, tok = tiny
    chat = dc.load_instruct("test", chat=True)
    plain = dc.load_instruct("test")
    assert dc.exact_match(model, tok, chat, n=20) == dc.exact_match(model, tok, plain, n=20)


# ---------------------------------------------------------------- datasets


def test_load_instruct_columns_and_formats():
    train, test = dc.load_instruct("train"), dc.load_instruct("test")
    assert train.column_names == test.column_names == ["task", "prompt", "response"]
    assert set(train["task"]) <= set(dc.PRETRAIN_TASKS + dc.HELD_OUT_TASKS)
    assert set(dc.HELD_OUT_TASKS) <= set(train["task"]) and set(test["task"]) == set(
        dc.PRETRAIN_TASKS + dc.HELD_OUT_TASKS
    )
    assert not set(train["prompt"]) & set(test["prompt"])
    row = dc.load_instruct("train", chat=True)[0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    with pytest.raises(ValueError):
        dc.load_instruct("validation")


def _sum_in(prompt: str) -> int:
    """Evaluate the addition asked for in a prompt, independently of the generator."""
    a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", prompt).groups())
    return a + b


@pytest.mark.parametrize("split", dc.SPLITS)
def test_preferences_chosen_is_the_correct_sum(split):
    ds = dc.load_preferences(split)
    assert ds.column_names == ["task", "prompt", "chosen", "rejected"] and len(ds) >= 100
    for row in ds:
        assert row["chosen"] != row["rejected"]
        assert int(row["chosen"]) == _sum_in(row["prompt"]) != int(row["rejected"])
    chat = dc.load_preferences(split, chat=True)[0]
    assert [m["role"] for m in chat["prompt"] + chat["chosen"] + chat["rejected"]] == [
        "user",
        "assistant",
        "assistant",
    ]


def test_preference_prompts_disjoint_across_splits():
    train, test = dc.load_preferences("train")["prompt"], dc.load_preferences("test")["prompt"]
    assert not set(train) & set(test)


def test_generator_formats_and_answers():
    for task, item, response in [
        ("add", (23, 45), "68"),
        ("add_words", (99, 1), "100"),
        ("reverse", "cuda", "a d u c"),
        ("spell_backwards", "gpu", "u p g"),
        ("upper", "gpu", "G P U"),
        ("shout", "fp", "F P"),
        ("fact", ("Q?", "A"), "A"),
        ("fact_json", ("Q?", "0.5"), '{"answer": 0.5}'),
    ]:
        row = tool.make_example(task, item)
        assert set(row) == {"task", "prompt", "response"} and row["task"] == task
        assert row["response"] == response
    with pytest.raises(ValueError):
        tool.make_example("divide", (1, 2))


def test_generator_splits_small_n_are_disjoint_and_deterministic():
    kw = dict(n_pretrain=500, n_train=20, n_test=10, n_pref_train=15, n_pref_test=5)
    splits = tool.make_splits(seed=1, **kw)
    assert splits == tool.make_splits(seed=1, **kw)
    n_held, n_seen = len(dc.HELD_OUT_TASKS), 3  # add, reverse and upper are replayed in train and tested
    assert {k: len(v) for k, v in splits.items()} == {
        "pretrain": 500,
        "train": n_held * 20 + n_seen * 5,
        "test": (n_held + n_seen) * 10 + len(tool.FACTS) + len(tool.NUMERIC_FACTS),
        "preferences_train": 15,
        "preferences_test": 5,
    }
    train, test = {r["prompt"] for r in splits["train"]}, {r["prompt"] for r in splits["test"]}
    assert not train & test
    pretrain = {r["prompt"] for r in splits["pretrain"] if not r["task"].startswith("fact")}
    assert not pretrain & test
    assert {r["task"] for r in splits["pretrain"]} == set(dc.PRETRAIN_TASKS)
    assert not {r["task"] for r in splits["pretrain"]} & set(dc.HELD_OUT_TASKS)
    pref = [r["prompt"] for r in splits["preferences_train"] + splits["preferences_test"]]
    assert len(set(pref)) == len(pref) and not set(pref) & test and not set(pref) & pretrain
    for row in splits["preferences_train"]:
        assert int(row["chosen"]) == _sum_in(row["prompt"]) != int(row["rejected"])


def test_shipped_jsonl_is_what_the_generator_writes(tmp_path):
    tool.main(["--data-only", "--out", str(tmp_path)])
    for name in ("train", "test", "preferences_train", "preferences_test"):
        shipped = (dc.INSTRUCT_DIR / f"{name}.jsonl").read_text()
        assert (tmp_path / "instruct" / f"{name}.jsonl").read_text() == shipped, f"{name}.jsonl is stale"


# ---------------------------------------------------------------- PEFT and TRL


def test_lora_attaches_to_q_and_v(tiny):
    from peft import LoraConfig, get_peft_model

    model, _ = models.load_tiny_lm()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    layers = model.config.num_hidden_layers
    assert len(names) == 2 * 2 * layers and all("q_proj" in n or "v_proj" in n for n in names)
    ids = torch.tensor([[1, 2, 3]])
    assert peft_model(input_ids=ids).logits.shape == (1, 3, model.config.vocab_size)


def test_lora_fine_tuning_moves_the_held_out_metric(tiny, held_out):
    model, tok = tiny
    train = [r for r in dc.load_instruct("train") if r["task"] in dc.HELD_OUT_TASKS]
    before = dc.exact_match(model, tok, held_out)
    torch.manual_seed(0)  # the LoRA matrices are initialised from torch's global generator
    tuned = tool.lora_probe(model, tok, train, steps=FT_STEPS, batch_size=16, lr=3e-3)
    after = dc.exact_match(tuned, tok, held_out)
    assert after >= before + FT_GAIN, (
        f"held-out exact match {before:.2f} -> {after:.2f} after {FT_STEPS} steps"
    )
    assert dc.exact_match(model, tok, held_out) == before, "the probe must fine-tune a copy"


def test_sft_trainer_runs_two_steps_on_cpu(tmp_path):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model, tok = models.load_tiny_lm()
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        activation_checkpointing=False,
        logging_steps=1,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dc.load_instruct("train", chat=True).select(range(8)),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before), "LoRA weights did not move"


def test_random_llama_is_seeded_and_takes_config_fields():
    a, b = models.random_llama(3), models.random_llama(3)
    assert isinstance(a, LlamaForCausalLM) and not a.training
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert a.config.intermediate_size == 2 * a.config.hidden_size + 8 and a.config.tie_word_embeddings
    base = models.random_llama(None, base_model=True, num_hidden_layers=1, vocab_size=31)
    assert type(base).__name__ == "LlamaModel" and len(base.layers) == 1 and base.config.vocab_size == 31
