"""The Hugging Face fixtures of tools/make-fixtures (which calls make_all): byte-level BPE
tokenizers trained with `tokenizers` and their reference encodings, and tiny Qwen3 / Llama
checkpoints written by transformers' save_pretrained with reference logits.

Layout under OUT (tests/fixtures/hf):
  tokenizer_qwen2/tokenizer.json     Qwen2 pre-tokenizer regex, NFC, special tokens <|endoftext|> ...
  tokenizer_llama3/tokenizer.json    Llama-3 regex (digits in threes), ignore_merges, no normalizer
  encodings.json                     {tokenizer: [{"text", "ids", "decoded"}]} from HF tokenizers
  qwen3_untied/  (bf16)  qwen3_tied_sharded/  (f32, several shards + index)  llama/  (f16, padded vocab)
  llama31/  (bf16, Llama 3.1 "llama3" RoPE scaling)
      config.json, model*.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json,
      reference.json {"tokens": [[...]]} and reference_logits.safetensors {"logits": F32 [B, T, V]}
"""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM)

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                 "<|eot_id|>"]

# Training text: several scripts, so merges exist for letters, CJK, accents, digits and code.
TRAIN_LINES = [
    "The quick brown fox jumps over the lazy dog. It's what we'd do, isn't it?",
    "Distillation: the student samples, the teacher scores every token; the student learns.",
    "Ça va très bien, merci ! Où est la bibliothèque ? Déjà vu, naïve café, façade.",
    "Grüße aus München: Größe, Übung, schön, Straße. ¿Qué tal? Año, niño, señor.",
    "你好，世界。我们今天学习机器学习和自然语言处理。模型很大，数据很多。",
    "こんにちは世界。東京は大きい都市です。カタカナとひらがな。",
    "안녕하세요 세계. 한국어 문장입니다.",
    "Numbers: 0 1 2 3 12 345 6789 2026-11-28 3.14159 1,000,000 42%",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n",
    "Emoji 🙂 🎉 👍🏽 ❤️ 👨‍👩‍👧 and symbols → ≤ ≥ ± × ÷ € £ ¥",
    "  leading spaces, trailing spaces   \n\n\ttabs\tand\nnewlines\r\nwindows line",
]
TEST_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm here, you're there, they'll come, we'd go, it's DONE, DON'T, He'LL",
    "Ça va? Café, naïve, façade, Größe, Straße, niño",
    "Cafe\u0301 and e\u0301 (decomposed accents: NFC composes them)",
    "你好，世界！机器学习。",
    "日本語のテキスト、カタカナ。한국어",
    "Emoji 🙂🎉 family 👨‍👩‍👧 thumbs 👍🏽 heart ❤️",
    "Digits 1 12 123 1234 12345 3.14159 2026-11-28 1,000,000",
    "spaces     between\t\ttabs\n\n\nnewlines\r\n and  trailing   ",
    "   leading",
    "\n\n\n",
    " ",
    "x",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|><|endoftext|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|><|im_end|>adjacent<|endoftext|>text<|im_end",
    "code:\n    def f(x):\n        return x ** 2  # square\n",
    "mixed: abc123def ４５６ ½ Ⅻ ١٢٣",
    "symbols ~!@#$%^&*()_+-=[]{}|;':\",./<>?`",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic space",
]


def train_tokenizer(pattern, special, nfc, ignore_merges, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN_LINES * 20, trainer)
    return tok


def tokenizers_():
    return {
        "tokenizer_qwen2": (train_tokenizer(QWEN2_PATTERN, QWEN_SPECIAL, True, False, 420), QWEN_SPECIAL),
        "tokenizer_llama3": (train_tokenizer(LLAMA3_PATTERN, LLAMA_SPECIAL, False, True, 400), LLAMA_SPECIAL),
    }


def write_tokenizers(out):
    encodings = {}
    for name, (tok, _) in tokenizers_().items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        tok.save(os.path.join(out, name, "tokenizer.json"))
        again = Tokenizer.from_file(os.path.join(out, name, "tokenizer.json"))
        rows = []
        for text in TEST_TEXTS:
            ids = again.encode(text, add_special_tokens=False).ids
            rows.append({"text": text, "ids": ids, "decoded": again.decode(ids, skip_special_tokens=False)})
        encodings[name] = rows
        merges = len(json.loads(tok.to_str())["model"]["merges"])
        print(f"{name}: {again.get_vocab_size()} tokens, {merges} merges, "
              f"{sum(len(r['ids']) for r in rows)} ids over {len(rows)} test texts")
    with open(os.path.join(out, "encodings.json"), "w", encoding="utf-8") as f:
        json.dump(encodings, f, ensure_ascii=False, indent=1)
        f.write("\n")


SHAPE = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=80, max_position_embeddings=64)
# name, family, tied, dtype, max_shard_size, extra vocab rows, seed
MODELS = [
    ("qwen3_untied", "qwen3", False, torch.bfloat16, None, 0, 11),
    ("qwen3_tied_sharded", "qwen3", True, torch.float32, "40KB", 0, 12),
    ("llama", "llama", False, torch.float16, None, 5, 13),
    ("llama31", "llama", False, torch.bfloat16, None, 0, 14),
]
# Llama 3.1's scaling with a pretraining context of 64 instead of 8192: at head_dim 16 and theta
# 10000 the wavelengths are 6.3, 20, 63, 199, ... so one frequency is kept, two are interpolated
# and five are stretched by `factor` (all three branches of the llama3 rule).
ROPE = {"llama31": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}
BATCH, SEQ = 2, 8


def hf_config(family, tied, vocab, special_ids, eos_ids, rope=None):
    common = dict(vocab_size=vocab, tie_word_embeddings=tied, hidden_act="silu", attention_dropout=0.0,
                  eos_token_id=eos_ids[0], **SHAPE)
    if rope:  # the extended context must exceed the pretraining one, as in Llama 3.1 (131072 > 8192)
        common["max_position_embeddings"] = 4 * rope["original_max_position_embeddings"]
    if family == "qwen3":
        return Qwen3Config(rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                           bos_token_id=None, **common)
    return LlamaConfig(rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                       rope_parameters=rope or {"rope_type": "default", "rope_theta": 500000.0},
                       bos_token_id=special_ids["<|begin_of_text|>"], **common)


def make_model(out, name, family, tied, dtype, shard, extra, seed, toks):
    tok, special = toks["tokenizer_qwen2" if family == "qwen3" else "tokenizer_llama3"]
    sid = {t: tok.token_to_id(t) for t in special}
    if family == "qwen3":
        eos_ids, eos_token, pad_token = [sid["<|im_end|>"], sid["<|endoftext|>"]], "<|im_end|>", "<|endoftext|>"
    else:
        eos_ids, eos_token, pad_token = [sid["<|eot_id|>"], sid["<|end_of_text|>"]], "<|eot_id|>", None
    vocab = tok.get_vocab_size() + extra
    cls = Qwen3ForCausalLM if family == "qwen3" else LlamaForCausalLM
    model = cls._from_config(hf_config(family, tied, vocab, sid, eos_ids, ROPE.get(name)), attn_implementation="eager")
    model = model.to(torch.float32).eval()
    # Larger than the default init so that every part of the forward pass moves the logits.
    rng = np.random.Generator(np.random.PCG64(seed))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            shape = tuple(p.shape)
            if pname.endswith("norm.weight"):
                w = 1.0 + 0.2 * rng.standard_normal(shape)
            elif pname == "model.embed_tokens.weight":
                w = rng.standard_normal(shape)
            else:
                w = rng.standard_normal(shape) / np.sqrt(shape[1])
            p.copy_(torch.from_numpy(w.astype(np.float32)))
    model = model.to(dtype)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.bos_token_id = None
    model.generation_config.pad_token_id = sid.get(pad_token) if pad_token else None
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos_token, pad_token=pad_token)
    fast.save_pretrained(path)

    # The reference: the saved checkpoint reloaded in float64 (bf16/f16 upcast exactly).
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64, attn_implementation="eager").eval()
    tokens = rng.integers(0, tok.get_vocab_size(), size=(BATCH, SEQ))
    with torch.no_grad():
        logits = ref(input_ids=torch.from_numpy(tokens), use_cache=False).logits.numpy()
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump({"tokens": tokens.tolist(), "eos_ids": eos_ids}, f)
        f.write("\n")
    save_file({"logits": logits.astype(np.float32)}, os.path.join(path, "reference_logits.safetensors"))
    files = sorted(os.listdir(path))
    size = sum(os.path.getsize(os.path.join(path, x)) for x in files)
    assert size < 1024 * 1024, f"{path} is {size} bytes; fixtures must stay small"
    print(f"{path}: {size / 1024:.0f} KiB, {dtype}, tied={tied}, vocab {vocab}, files {files}")


def make_all(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    write_tokenizers(out)
    toks = tokenizers_()
    for m in MODELS:
        make_model(out, *m, toks)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}"
    return r.stdout


def check_export(out, opd):
    """opd import then opd export of every model fixture; transformers must load the export with
    the same tensors (exactly: f32 export of bf16/f16 values), tokenizer and logits."""
    for name, *_ in MODELS:
        src = os.path.join(out, name)
        with tempfile.TemporaryDirectory() as tmp:
            h5 = os.path.join(tmp, "m.h5")
            run([opd, "import", "--hf", src, "--out", h5])
            for dtype in ("f32", "bf16"):
                exp = os.path.join(tmp, "export_" + dtype)
                run([opd, "export", "--model", h5, "--hf", exp, "--dtype", dtype])
                a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
                b = AutoModelForCausalLM.from_pretrained(exp, dtype=torch.float32).eval()
                sa, sb = a.state_dict(), b.state_dict()
                assert sa.keys() == sb.keys(), (name, sorted(set(sa) ^ set(sb)))
                orig_dtype = next(AutoModelForCausalLM.from_pretrained(src).parameters()).dtype
                exact = dtype == "f32" or orig_dtype == torch.bfloat16
                for k in sa:
                    if exact:
                        assert torch.equal(sa[k], sb[k]), (name, dtype, k)
                    else:  # f16 values rounded to bf16
                        assert torch.allclose(sa[k], sb[k], rtol=1e-2, atol=1e-3), (name, dtype, k)
                ta, tb = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(exp)
                for text in TEST_TEXTS:
                    assert ta.encode(text, add_special_tokens=False) == tb.encode(text, add_special_tokens=False)
                assert tb.eos_token == ta.eos_token, (name, tb.eos_token, ta.eos_token)
                ids = torch.tensor(json.load(open(os.path.join(src, "reference.json")))["tokens"])
                with torch.no_grad():
                    la, lb = a(input_ids=ids).logits, b(input_ids=ids).logits
                diff = (la - lb).abs().max().item()
                assert diff == 0 or not exact, (name, dtype, diff)
                print(f"{name}: opd import -> export ({dtype}) -> transformers: "
                      f"{'identical' if exact else 'bf16-rounded'} tensors, same tokenizer, max logit diff {diff:.2e}")
    check_lora_export(out, opd)


def check_lora_export(out, opd):
    """A LoRA run's PEFT export: a few SFT steps with --lora-rank on the imported qwen3_untied
    fixture, then `opd export` of its final.h5 (the base plus DIR/adapter) and `opd merge` of the
    adapters into the base. peft's PeftModel loads the adapter onto the exported base with the
    logits of the merged model (exported too), to float32 rounding of the merged weights."""
    from peft import PeftModel
    src = os.path.join(out, "qwen3_untied")
    rows = [{"prompt": "The quick brown fox", "completion": " jumps over the lazy dog."},
            {"prompt": "Ça va", "completion": " très bien, merci !"},
            {"prompt": "def add(a, b):", "completion": "\n    return a + b"},
            {"prompt": "Numbers: 0 1 2", "completion": " 3 12 345"}]
    with tempfile.TemporaryDirectory() as tmp:
        h5, data, runs = (os.path.join(tmp, x) for x in ("m.h5", "d.jsonl", "run"))
        run([opd, "import", "--hf", src, "--out", h5])
        with open(data, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        for targets in ("q,k,v,o,gate,up,down", "v,o,down"):
            shutil.rmtree(runs, ignore_errors=True)
            run([opd, "sft", "--student", h5, "--data", data, "--steps", "3", "--prompts-per-step", "4",
                 "--lora-rank", "4", "--lora-alpha", "8", "--lora-targets", targets, "--lr", "5e-2",
                 "--eval-every", "0", "--threads", "1", "--out", runs])
            exp, merged_h5, merged_exp = (os.path.join(tmp, x) for x in ("exp", "merged.h5", "merged_exp"))
            run([opd, "export", "--model", os.path.join(runs, "final.h5"), "--hf", exp])
            run([opd, "merge", "--model", h5, "--adapter", os.path.join(runs, "final.h5"), "--out", merged_h5])
            run([opd, "export", "--model", merged_h5, "--hf", merged_exp])
            cfg = json.load(open(os.path.join(exp, "adapter", "adapter_config.json")))
            assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8, cfg
            base = AutoModelForCausalLM.from_pretrained(exp, dtype=torch.float64).eval()
            ids = torch.tensor(json.load(open(os.path.join(src, "reference.json")))["tokens"])
            with torch.no_grad():
                lb = base(input_ids=ids).logits
            peft = PeftModel.from_pretrained(base, os.path.join(exp, "adapter")).eval()
            merged = AutoModelForCausalLM.from_pretrained(merged_exp, dtype=torch.float64).eval()
            with torch.no_grad():
                lp, lm = peft(input_ids=ids).logits, merged(input_ids=ids).logits
            scale = lm.abs().max().item()
            diff, moved = (lp - lm).abs().max().item(), (lp - lb).abs().max().item()
            assert diff <= 1e-5 * scale, (targets, diff, scale)
            assert moved > 1e-3 * scale, f"{targets}: the adapters did not change the model ({moved:.2e})"
            shutil.rmtree(exp)
            shutil.rmtree(merged_exp)
            print(f"LoRA ({targets}): opd sft --lora-rank 4 -> export (PEFT adapter) -> peft on the exported base: "
                  f"max logit diff to the opd-merged model {diff:.2e} (logits up to {scale:.1f}, adapters moved "
                  f"them by {moved:.2f})")


def make_big(path, out):
    """A random model of Qwen3-0.6B's shape (tied, bf16) with the small test tokenizer."""
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer_qwen2", "tokenizer.json"))
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                      rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                      tie_word_embeddings=True, use_sliding_window=False, eos_token_id=tok.token_to_id("<|im_end|>"))
    torch.manual_seed(0)
    model = Qwen3ForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>").save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"{path}: random Qwen3-0.6B-shaped model, {n / 1e6:.0f}M parameters, files {sorted(os.listdir(path))}")


if __name__ == "__main__":
    import sys
    make_all(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf"))
