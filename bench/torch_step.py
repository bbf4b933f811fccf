#!/usr/bin/env python3
"""PyTorch eager timing of the steps `opd bench model` and `opd bench step` time, so the two can be
compared as a ratio.

--mode model (the default; the CPU comparison of `opd bench model`): one forward + backward of a
Qwen3-family model, no optimizer (median ms over --steps), plus batched greedy generation with a KV
cache (median of --gen-reps calls). The loss is the mean next-token cross entropy over the batch
(the SFT loss); the default vocabulary is small, so the choice hardly changes the time. The
default (tiny) model has an untied LM head.

    python3 bench/torch_step.py [--d-model 128 --layers 4 ... --threads 2]

--mode step (the GPU comparison of `opd bench step --device cuda`): one on-policy distillation
step, its three phases timed apart (torch.cuda.synchronize around each on a GPU):
  rollout  the student samples --new-tokens G tokens (temperature 1) after a --prompt P token
           prompt for --batch B sequences with transformers' KV cache (--kv-cache), recording
           log p_old of each sampled token; prefill and decode are timed apart, and the decode is
           set against the bandwidth roofline: weights + KV cache read per decoded token.
  score    the teacher reads the B sequences of P + G tokens (micro-batches of --micro-batch) and
           returns the log-softmax of the sampled tokens at the G completion positions.
  update   student forward + backward of the per-token reverse-KL policy-gradient loss
           L = -(1/BG) sum_t A_t exp(logp - logp_old), A_t = -(logp_old - logp_teacher), over the
           completion tokens (micro-batches of --micro-batch, gradients accumulated), then global
           norm clipping (1.0) and one AdamW step; reported with its model FLOPs utilisation.

    python3 bench/torch_step.py --mode step --device cuda --preset qwen3-0.6b --teacher-preset qwen3-1.7b

Precision with --dtype bf16 (the default on cuda), as opd's GPU path: the models hold bf16
weights and compute in bf16 (no autocast); log-softmax, KL and loss in fp32; the optimizer keeps
an fp32 master copy of the student, receives the bf16 gradients as fp32, steps (fused AdamW on a
GPU) and writes the master back to the bf16 weights. --dtype fp32 (the default on cpu) is fp32
throughout. Attention is transformers' "sdpa" (PyTorch's fused kernels) by default on cuda and
its "eager" (explicit [T x T] scores) on cpu. Weights are random (the transformers default init):
only the shapes matter for timing. PYTORCH_CUDA_ALLOC_CONF defaults to expandable_segments:True
(the KV cache grows one token at a time).

--dry-run prints each Qwen3 preset's parameter counts and the memory plan of --mode step without
building anything on a device.
"""
import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM, StaticCache  # noqa: E402

# Shapes of the published Qwen3 dense models (their config.json); all tie the LM head to the
# embedding and share one vocabulary, so any of them can teach any other.
PRESETS = {
    "qwen3-0.6b": dict(vocab=151936, d_model=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072),
    "qwen3-1.7b": dict(vocab=151936, d_model=2048, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=6144),
    "qwen3-4b": dict(vocab=151936, d_model=2560, layers=36, heads=32, kv_heads=8, head_dim=128, ffn=9728),
}
for _p in PRESETS.values():
    _p.update(tied=True, rope_theta=1e6)
TINY = dict(vocab=64, d_model=128, layers=4, heads=4, kv_heads=2, head_dim=32, ffn=384, tied=False, rope_theta=1e4)
SHAPE_OPTIONS = ("vocab", "d_model", "layers", "heads", "kv_heads", "head_dim", "ffn")

H100_SXM_BF16_DENSE_TFLOPS = 989.0
H100_SXM_HBM3_GBPS = 3350.0
GIB = 1 << 30
# Share of --gpu-mem-gib the default batch sizes plan for: the rest is for the CUDA context, cuBLAS
# workspaces, allocator slack and the estimate's error (it counts saved tensors, not transients).
USABLE_MEMORY = 0.75


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["model", "step"], default="model",
                    help="model: fwd+bwd and greedy generation (opd bench model); "
                         "step: rollout, teacher scoring and update of one distillation step (opd bench step)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], help="default fp32 on cpu, bf16 on cuda")
    ap.add_argument("--attn", choices=["eager", "sdpa"], help="transformers attention: default eager on cpu, "
                    "sdpa on cuda")
    ap.add_argument("--kv-cache", choices=["dynamic", "static"], default="dynamic",
                    help="--mode step rollout: transformers' DynamicCache (grown by concatenation each token; the "
                         "default of generate) or StaticCache (preallocated for --seq; attention then reads all of it)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="the (student) model's shape; the shape options "
                    "below override single fields; default: the tiny model the defaults below describe")
    ap.add_argument("--teacher-preset", choices=sorted(PRESETS),
                    help="--mode step: the teacher's shape (default: the student's shape, other random weights)")
    ap.add_argument("--vocab", type=int, help="default 64")
    ap.add_argument("--d-model", type=int, help="default 128")
    ap.add_argument("--layers", type=int, help="default 4")
    ap.add_argument("--heads", type=int, help="default 4")
    ap.add_argument("--kv-heads", type=int, help="default 2")
    ap.add_argument("--head-dim", type=int, help="default 32")
    ap.add_argument("--ffn", type=int, help="default 384")
    ap.add_argument("--batch", type=int,
                    help="sequences (--mode step: rollouts per step). Default 32, except --mode step on cuda with a "
                         "preset: the largest power of two up to 64 whose estimated peak memory fits --gpu-mem-gib "
                         "(see --dry-run; 64 for qwen3-0.6b taught by qwen3-1.7b or qwen3-4b at seq 2048)")
    ap.add_argument("--micro-batch", type=int,
                    help="--mode step: sequences per scoring / update micro-batch. Default: --batch, except on cuda "
                         "with a preset: the largest power of two whose estimated update memory fits "
                         "(4 for a qwen3-0.6b student at seq 2048 on 80 GiB)")
    ap.add_argument("--seq", type=int, help="sequence length: prompt + new tokens (default 64; 2048 with a preset)")
    ap.add_argument("--prompt", type=int, help="prompt length (default 8; --seq / 2 with a preset)")
    ap.add_argument("--new-tokens", type=int, help="tokens generated per sequence (default --seq - --prompt; "
                    "given alone, --seq becomes --prompt + --new-tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps (median); default 10 (--mode model), 3 (--mode step)")
    ap.add_argument("--warmup", type=int, help="untimed steps first; default 2 (--mode model), 1 (--mode step)")
    ap.add_argument("--gen-reps", type=int, default=3, help="--mode model: timed generate calls (median)")
    ap.add_argument("--lr", type=float, default=1e-6, help="--mode step: AdamW learning rate")
    ap.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS,
                    help="peak for the FLOPs utilisation (default 989: H100 SXM, bf16 dense tensor cores; "
                         "H200 has the same)")
    ap.add_argument("--peak-gbps", type=float, default=H100_SXM_HBM3_GBPS,
                    help="memory bandwidth for the decode roofline (default 3350: H100 SXM HBM3; H200: 4800)")
    ap.add_argument("--gpu-mem-gib", type=float, default=80.0,
                    help="device memory the default --batch / --micro-batch must fit (default 80: one H100; "
                         "the plan uses 75%% of it; the rest is for the CUDA context, allocator and transients)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print every preset's parameter counts and the --mode step memory plan, then stop")
    ap.add_argument("--json", action="store_true", help="--mode model: also print one JSON line of the figures "
                    "(--mode step always prints one)")
    a = ap.parse_args()
    if a.dry_run:
        return a
    a.dtype = a.dtype or ("bf16" if a.device == "cuda" else "fp32")
    a.attn = a.attn or ("sdpa" if a.device == "cuda" else "eager")
    student = dict(PRESETS[a.preset] if a.preset else TINY)
    for k in SHAPE_OPTIONS:
        if getattr(a, k) is not None:
            student[k] = getattr(a, k)
    for k in SHAPE_OPTIONS:
        setattr(a, k, student[k])  # the --mode model code reads the shape from here
    a.student = student
    a.teacher = dict(PRESETS[a.teacher_preset]) if a.teacher_preset else dict(student)
    for name, shape in (("student", a.student), ("teacher", a.teacher)):
        if min(shape[k] for k in SHAPE_OPTIONS) < 1:
            ap.error(f"every {name} shape field must be at least 1: {shape}")
        if shape["heads"] % shape["kv_heads"]:
            ap.error(f"the {name}'s --heads must be a multiple of --kv-heads")
    if a.teacher["vocab"] != a.student["vocab"]:
        ap.error(f"teacher and student must share a vocabulary: {a.teacher['vocab']} vs {a.student['vocab']}")

    big = a.preset is not None
    if a.new_tokens is not None and a.seq is None:
        a.seq = (a.prompt if a.prompt is not None else (1024 if big else 8)) + a.new_tokens
    a.seq = a.seq if a.seq is not None else (2048 if big else 64)
    a.prompt = a.prompt if a.prompt is not None else (a.seq // 2 if big else 8)
    if a.new_tokens is None:
        a.new_tokens = a.seq - a.prompt
    if a.prompt < 1 or a.prompt >= a.seq:
        ap.error("--prompt must be at least 1 and shorter than --seq")
    if a.prompt + a.new_tokens != a.seq:
        ap.error(f"--prompt {a.prompt} + --new-tokens {a.new_tokens} != --seq {a.seq}")
    a.steps = a.steps if a.steps is not None else (10 if a.mode == "model" else 3)
    a.warmup = a.warmup if a.warmup is not None else (2 if a.mode == "model" else 1)
    if min(a.steps, a.gen_reps) < 1 or a.warmup < 0:
        ap.error("--steps and --gen-reps must be at least 1, --warmup at least 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no CUDA device")
    if a.mode == "step" and a.device == "cuda" and big and (a.batch is None or a.micro_batch is None):
        b, m = choose_batches(a.student, a.teacher, a.prompt, a.new_tokens, a.dtype, a.gpu_mem_gib)
        a.batch = a.batch if a.batch is not None else b
        a.micro_batch = a.micro_batch if a.micro_batch is not None else min(m, a.batch)
    a.batch = a.batch if a.batch is not None else 32
    a.micro_batch = a.micro_batch if a.micro_batch is not None else a.batch
    if a.batch < 1 or not 1 <= a.micro_batch <= a.batch:
        ap.error("--batch must be at least 1 and --micro-batch between 1 and --batch")
    return a


# ---- shapes, parameter counts, FLOPs and bytes -------------------------------------------------

def make_config(shape, max_len):
    return Qwen3Config(
        vocab_size=shape["vocab"], hidden_size=shape["d_model"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"], head_dim=shape["head_dim"],
        intermediate_size=shape["ffn"], max_position_embeddings=max_len,
        rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]}, rms_norm_eps=1e-6,
        attention_bias=False, tie_word_embeddings=shape["tied"], use_sliding_window=False)


def param_counts(shape):
    """(all parameters, non-embedding parameters): the embedding and the LM head are left out of the
    latter whether tied or not, since the LM head is charged per position it actually runs on."""
    d, q, kv, hd = shape["d_model"], shape["heads"] * shape["head_dim"], shape["kv_heads"] * shape["head_dim"], \
        shape["head_dim"]
    layer = d * (q + 2 * kv) + q * d + 3 * d * shape["ffn"] + 2 * d + 2 * hd  # q,k,v,o, gate/up/down, 2+2 norms
    nonembedding = shape["layers"] * layer + d  # + the final norm
    tables = shape["vocab"] * d * (1 if shape["tied"] else 2)
    return nonembedding + tables, nonembedding


def counted_params(model, shape):
    """param_counts, checked against the model transformers built, so the FLOPs follow the real model."""
    total = sum(p.numel() for p in model.parameters())  # a tied table counts once
    expect = param_counts(shape)
    assert total == expect[0], f"transformers built {total} parameters, the shape formula says {expect[0]}"
    return expect


def forward_flops(shape, batch, seq, lm_positions):
    """Forward FLOPs of `batch` sequences of `seq` tokens with the LM head on `lm_positions` of them:
    2 per weight per token, plus causal attention (QK^T and PV, half the [seq x seq] square)."""
    _, nonemb = param_counts(shape)
    q_dim = shape["heads"] * shape["head_dim"]
    dense = 2 * nonemb * batch * seq
    head = 2 * shape["vocab"] * shape["d_model"] * batch * lm_positions
    attention = 2 * shape["layers"] * q_dim * batch * seq * seq  # 2 matmuls x 2 FLOPs x seq^2 / 2
    return dense, head, attention


def decode_bytes(shape, batch, prompt, new_tokens, elt):
    """Bytes the decode steps must read at least: after the prefill, each of the new_tokens - 1
    steps reads every weight once (the LM head once, whether tied or not; the embedding lookup is
    a few rows) and the KV cache of all `batch` sequences up to and including its own position."""
    _, nonemb = param_counts(shape)
    weights = (nonemb + shape["vocab"] * shape["d_model"]) * elt
    kv_per_position = shape["layers"] * 2 * shape["kv_heads"] * shape["head_dim"] * elt * batch
    steps = new_tokens - 1
    positions = sum(prompt + j + 1 for j in range(steps))
    return steps * weights + kv_per_position * positions


def activation_bytes_per_token(shape, elt):
    """What autograd keeps per token through the whole model with transformers' Qwen3 (sdpa) in bf16.
    Counted with torch.autograd.graph.saved_tensors_hooks on transformers 5.24 (bf16, sdpa, CPU):
    71.8 / 112.8 / 170.3 KB per token per layer for the 0.6B / 1.7B / 4B shapes, plus 8.3-8.8 bytes x
    d_model outside the layers; this formula is 0-3% above those counts. Doubled for fp32 (a bound:
    the fp32 copies the RMSNorms keep in bf16 do not double)."""
    d, q, kv, f = shape["d_model"], shape["heads"] * shape["head_dim"], shape["kv_heads"] * shape["head_dim"], \
        shape["ffn"]
    per_layer = 14 * d + 12 * q + 10 * kv + 8 * f + 256
    return (shape["layers"] * per_layer + 9 * d) * max(elt, 2) / 2


def memory_plan(student, teacher, prompt, new_tokens, dtype, batch, micro):
    """Estimated peak bytes of each --mode step phase on top of what stays resident."""
    elt = 2 if dtype == "bf16" else 4
    seq = prompt + new_tokens
    n_s, _ = param_counts(student)
    n_t, _ = param_counts(teacher)
    vocab = student["vocab"]
    # weights + grads (+ fp32 master and its grads in bf16) + AdamW's two fp32 moments; teacher weights
    resident = n_s * (elt + elt + (8 if elt == 2 else 0) + 8) + n_t * elt
    kv = batch * seq * student["layers"] * 2 * student["kv_heads"] * student["head_dim"] * elt
    rollout = kv * 1.25 + batch * vocab * (elt + 12)  # + growth slack; logits, fp32 log-softmax, probs
    # teacher logits of the micro-batch's completion positions: bf16, fp32 copy and log-softmax
    score = micro * new_tokens * vocab * (elt + 8) + micro * seq * 4 * teacher["ffn"] * elt
    # saved activations + logits (bf16 out, fp32 log-softmax kept, fp32 and bf16 grads in backward)
    update = micro * seq * activation_bytes_per_token(student, elt) + micro * new_tokens * vocab * (elt + 12)
    return dict(resident=resident, rollout=rollout, score=score, update=update,
                peak=resident + max(rollout, score, update))


def choose_batches(student, teacher, prompt, new_tokens, dtype, mem_gib):
    budget = USABLE_MEMORY * mem_gib * GIB
    batch = 64
    while batch > 1 and memory_plan(student, teacher, prompt, new_tokens, dtype, batch, 1)["resident"] + \
            memory_plan(student, teacher, prompt, new_tokens, dtype, batch, 1)["rollout"] > budget:
        batch //= 2
    micro = batch
    while micro > 1 and memory_plan(student, teacher, prompt, new_tokens, dtype, batch, micro)["peak"] > budget:
        micro //= 2
    return batch, micro


def dry_run(a):
    print("Qwen3 presets (parameters from the shape formula; checked against transformers' model on the meta "
          "device):")
    for name, shape in PRESETS.items():
        with torch.device("meta"):
            model = Qwen3ForCausalLM._from_config(make_config(shape, 2048), dtype=torch.bfloat16)
        total, nonemb = counted_params(model, shape)
        print(f"  {name:11s} {total / 1e9:.3f}B parameters, {nonemb / 1e9:.3f}B non-embedding, "
              f"{shape['layers']} layers, d {shape['d_model']}, ffn {shape['ffn']}, heads {shape['heads']}/"
              f"{shape['kv_heads']} x {shape['head_dim']}, vocab {shape['vocab']}, tied")
    prompt, new_tokens = 1024, 1024
    print(f"--mode step memory plan on cuda, bf16, prompt {prompt} + {new_tokens} new tokens, "
          f"{a.gpu_mem_gib:g} GiB ({USABLE_MEMORY:.0%} planned for), estimates in GiB:")
    for s, t in (("qwen3-0.6b", "qwen3-1.7b"), ("qwen3-0.6b", "qwen3-4b"), ("qwen3-1.7b", "qwen3-4b")):
        b, m = choose_batches(PRESETS[s], PRESETS[t], prompt, new_tokens, "bf16", a.gpu_mem_gib)
        p = memory_plan(PRESETS[s], PRESETS[t], prompt, new_tokens, "bf16", b, m)
        print(f"  {s} <- {t}: --batch {b} --micro-batch {m}: resident {p['resident'] / GIB:.1f} + max(rollout "
              f"{p['rollout'] / GIB:.1f}, score {p['score'] / GIB:.1f}, update {p['update'] / GIB:.1f}) = peak "
              f"{p['peak'] / GIB:.1f}")


def build(shape, a, seed):
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    with torch.device(a.device):
        model = Qwen3ForCausalLM._from_config(make_config(shape, a.seq), attn_implementation=a.attn, dtype=dtype)
    return model.to(device=a.device, dtype=dtype)


def sync(a):
    if a.device == "cuda":
        torch.cuda.synchronize()


def clock(a):
    sync(a)
    return time.perf_counter()


# ---- --mode model: the opd bench model comparison ----------------------------------------------

def step_flops(a, model):
    # FLOPs per training step (forward + backward), the count opd bench reports:
    #   6 * (non-embedding parameters + LM head) * tokens          (2 fwd + 4 bwd per weight per token)
    # + 12 * layers * seq * q_dim * tokens / 2                     (QK^T and PV, fwd + bwd; /2: causal)
    # with tokens = batch * seq, q_dim = heads * head_dim. Norm weights count as parameters.
    tokens = a.batch * a.seq
    params = sum(p.numel() for n, p in model.named_parameters() if n != "model.embed_tokens.weight")
    if model.config.tie_word_embeddings:
        params += a.vocab * a.d_model
    q_dim = a.heads * a.head_dim
    return 6 * params * tokens + 12 * a.layers * a.seq * q_dim * tokens / 2


def bench_step(a, model):
    model.train()
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), device=a.device)

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab).float(), ids[:, 1:].reshape(-1))
        loss.backward()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = clock(a)
        step()
        times.append(clock(a) - t0)
    # The median, so a burst of other work on a shared machine does not skew the ratio to opd.
    dt = statistics.median(times)
    tokens = a.batch * a.seq
    flops = step_flops(a, model)
    print(f"torch fwd+bwd: {tokens / dt:.0f} tokens/s, {dt * 1e3:.1f} ms/step, "
          f"{flops / dt / 1e9:.2f} GFLOP/s (6*params*tokens + attention)")
    return dict(s=dt, tokens_per_s=tokens / dt, flops=flops, gflops_per_s=flops / dt / 1e9)


def bench_generate(a, model):
    model.eval()
    prompt = torch.randint(0, a.vocab, (a.batch, a.prompt), device=a.device)
    new = a.seq - a.prompt
    # No EOS, fixed length: every sequence produces exactly `new` tokens.
    gen = GenerationConfig(do_sample=False, use_cache=True, max_new_tokens=new, min_new_tokens=new,
                           eos_token_id=None, pad_token_id=0, bos_token_id=None)
    mask = torch.ones_like(prompt)
    times = []
    with torch.no_grad():
        model.generate(prompt, attention_mask=mask, generation_config=gen)  # warm-up
        for _ in range(a.gen_reps):
            t0 = clock(a)
            out = model.generate(prompt, attention_mask=mask, generation_config=gen)
            times.append(clock(a) - t0)
    dt = statistics.median(times)
    assert out.shape == (a.batch, a.seq), out.shape
    print(f"torch generate: {a.batch * new / dt:.0f} new tokens/s "
          f"({a.batch} x {a.prompt}->{a.seq}, {dt * 1e3:.0f} ms, median of {a.gen_reps})")
    return dict(s=dt, new_tokens_per_s=a.batch * new / dt)


def run_model_mode(a):
    model = build(a.student, a, seed=0)
    print(f"torch {torch.__version__}, {a.threads} threads, {sum(p.numel() for p in model.parameters())} "
          f"parameters, batch {a.batch} x seq {a.seq}")
    figures = dict(fwd_bwd=bench_step(a, model), generate=bench_generate(a, model))
    if a.json:
        print(json.dumps(dict(mode="model", **common_fields(a), fwd_bwd=figures["fwd_bwd"],
                              generate=figures["generate"])))


# ---- --mode step: the opd bench step comparison ------------------------------------------------

# transformers 5 renamed forward's past_key_values to cache; follow whichever this one has.
_CACHE_ARG = "cache" if "cache" in inspect.signature(Qwen3ForCausalLM.forward).parameters else "past_key_values"


def forward(model, ids, cache=None, use_cache=False, **kw):
    if cache is not None:
        kw[_CACHE_ARG] = cache
    use_cache = use_cache or cache is not None
    out = model(input_ids=ids, use_cache=use_cache, **kw)
    cache = getattr(out, _CACHE_ARG, None)
    if use_cache and cache is None:  # else the next decode step would silently run without its context
        raise SystemExit(f"torch_step: transformers {transformers.__version__} returned no KV cache "
                         f"as '{_CACHE_ARG}'")
    return out.logits, cache


def token_logprobs(logits, tokens):
    """fp32 log-softmax of `logits` [..., V] gathered at `tokens` [...]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def rollout(a, student, prompts, times):
    """Samples G tokens per prompt with a KV cache; returns the sequences [B, P+G] and log p_old [B, G]."""
    student.eval()
    batch, new = prompts.shape[0], a.new_tokens
    tokens = torch.empty(batch, new, dtype=torch.long, device=a.device)
    logp_old = torch.empty(batch, new, dtype=torch.float32, device=a.device)
    t0 = clock(a)
    cache = StaticCache(config=student.config, max_cache_len=a.seq) if a.kv_cache == "static" else None
    logits, cache = forward(student, prompts, cache=cache, use_cache=True, logits_to_keep=1)
    times["prefill"] = clock(a) - t0
    for j in range(new):
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # temperature 1
        tok = torch.multinomial(logp.exp(), 1)
        tokens[:, j] = tok[:, 0]
        logp_old[:, j] = logp.gather(1, tok)[:, 0]
        if j + 1 < new:
            logits, cache = forward(student, tok, cache=cache)
    del cache, logits
    times["rollout"] = clock(a) - t0
    times["decode"] = times["rollout"] - times["prefill"]
    return torch.cat([prompts, tokens], dim=1), logp_old


@torch.no_grad()
def score(a, teacher, seqs):
    """The teacher's log-probabilities of the sampled tokens at the G completion positions [B, G]."""
    teacher.eval()
    out = []
    for mb in seqs.split(a.micro_batch):
        # positions P-1 .. P+G-2 predict the completion tokens P .. P+G-1
        logits, _ = forward(teacher, mb, logits_to_keep=a.new_tokens + 1)
        out.append(token_logprobs(logits[:, :-1], mb[:, a.prompt:]))
        del logits
    return torch.cat(out)


class MasterAdamW:
    """AdamW on fp32 master weights: the model's own parameters when they are fp32, otherwise an fp32
    copy that takes the bf16 gradients and is written back to the bf16 weights after each step."""

    def __init__(self, model, lr, device):
        self.params = list(model.parameters())
        fp32 = all(p.dtype == torch.float32 for p in self.params)
        self.master = self.params if fp32 else [p.detach().float().clone().requires_grad_() for p in self.params]
        self.opt = torch.optim.AdamW(self.master, lr=lr, weight_decay=0.01,
                                     **({"fused": True} if device == "cuda" else {}))

    def step(self):
        if self.master is not self.params:
            for m, p in zip(self.master, self.params):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        torch.nn.utils.clip_grad_norm_(self.master, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.master is not self.params:
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.master)


def update(a, student, opt, seqs, logp_old, logp_teacher):
    """One on-policy reverse-KL policy-gradient step; returns the loss (a float)."""
    student.train()
    advantage = -(logp_old - logp_teacher)  # kl_coef 1, no discount
    n_tokens = seqs.shape[0] * a.new_tokens
    total = torch.zeros((), device=a.device)
    for mb, old, adv in zip(seqs.split(a.micro_batch), logp_old.split(a.micro_batch),
                            advantage.split(a.micro_batch)):
        logits, _ = forward(student, mb, logits_to_keep=a.new_tokens + 1)
        logp = token_logprobs(logits[:, :-1], mb[:, a.prompt:])
        del logits
        loss = -(adv * torch.exp(logp - old)).sum() / n_tokens
        loss.backward()
        total += loss.detach()
    opt.step()
    return total.item()


def distill_step(a, student, teacher, opt):
    times = {}
    prompts = torch.randint(0, a.vocab, (a.batch, a.prompt), device=a.device)
    seqs, logp_old = rollout(a, student, prompts, times)
    t0 = clock(a)
    logp_teacher = score(a, teacher, seqs)
    times["score"] = clock(a) - t0
    t0 = clock(a)
    loss = update(a, student, opt, seqs, logp_old, logp_teacher)
    times["update"] = clock(a) - t0
    times["step"] = times["rollout"] + times["score"] + times["update"]
    kl = (logp_old - logp_teacher).mean().item()
    if not (loss == loss and kl == kl):
        raise SystemExit(f"torch_step: the loss ({loss}) or the KL ({kl}) is NaN")
    return times, kl


def halve_micro_batch(a, student):
    for p in student.parameters():
        p.grad = None
    torch.cuda.empty_cache()
    a.micro_batch //= 2
    print(f"  out of device memory in a warm-up step: retrying with --micro-batch {a.micro_batch}")


def common_fields(a):
    return dict(device=a.device, gpu=torch.cuda.get_device_name() if a.device == "cuda" else None,
                dtype=a.dtype, attn=a.attn, kv_cache=a.kv_cache, torch=torch.__version__,
                transformers=transformers.__version__, threads=a.threads, preset=a.preset, batch=a.batch,
                seq=a.seq, prompt=a.prompt, new_tokens=a.new_tokens, steps=a.steps, warmup=a.warmup)


def run_step_mode(a):
    student = build(a.student, a, seed=0)
    teacher = build(a.teacher, a, seed=1)
    for p in teacher.parameters():
        p.requires_grad_(False)
    n_s, nonemb_s = counted_params(student, a.student)
    n_t, nonemb_t = counted_params(teacher, a.teacher)
    opt = MasterAdamW(student, a.lr, a.device)
    elt = 2 if a.dtype == "bf16" else 4
    plan = memory_plan(a.student, a.teacher, a.prompt, a.new_tokens, a.dtype, a.batch, a.micro_batch)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {a.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if a.device == 'cuda' else f', {a.threads} threads'}, "
          f"{a.dtype}, attention {a.attn}, {a.kv_cache} KV cache")
    print(f"student {a.preset or 'of the shape options'}: {n_s} parameters ({nonemb_s} non-embedding); teacher "
          f"{a.teacher_preset or 'same shape'}: {n_t} parameters ({nonemb_t} non-embedding)")
    print(f"batch {a.batch} (micro-batch {a.micro_batch}) x (prompt {a.prompt} + {a.new_tokens} new) = seq "
          f"{a.seq}; estimated peak memory {plan['peak'] / GIB:.1f} GiB; {a.warmup} warm-up + {a.steps} "
          f"timed steps")
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs, halvings = [], 0
    for i in range(a.warmup + a.steps):
        times, kl = None, None
        while times is None:
            try:
                times, kl = distill_step(a, student, teacher, opt)
            except torch.cuda.OutOfMemoryError:
                # The plan is an estimate: a warm-up step that runs out of memory retries with half the
                # micro-batch (outside this handler, so the traceback no longer holds the activations).
                if i >= a.warmup or a.micro_batch == 1:
                    raise
            if times is None:
                halve_micro_batch(a, student)
                halvings += 1
        print(f"  step {i + 1}{' (warm-up)' if i < a.warmup else ''}: " +
              ", ".join(f"{k} {v:.3f} s" for k, v in times.items()) + f", KL {kl:.3f}")
        if i >= a.warmup:
            runs.append(times)
    t = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    B, P, G, T = a.batch, a.prompt, a.new_tokens, a.seq
    peak_flops = a.peak_tflops * 1e12
    upd = [3 * f for f in forward_flops(a.student, B, T, G)]  # fwd + bwd = 3x fwd
    scr = forward_flops(a.teacher, B, T, G)
    pre = forward_flops(a.student, B, P, 1)
    dbytes = decode_bytes(a.student, B, P, G, elt)
    fig = dict(
        rollout=dict(s=t["rollout"], new_tokens_per_s=B * G / t["rollout"], tokens_per_s=B * T / t["rollout"],
                     prefill_s=t["prefill"], prefill_tokens_per_s=B * P / t["prefill"],
                     prefill_mfu=sum(pre) / t["prefill"] / peak_flops,
                     decode_s=t["decode"], decode_tokens_per_s=B * (G - 1) / t["decode"] if G > 1 else None,
                     decode_bytes=dbytes, decode_gbps=dbytes / t["decode"] / 1e9 if G > 1 else None,
                     decode_roofline=dbytes / t["decode"] / 1e9 / a.peak_gbps if G > 1 else None),
        score=dict(s=t["score"], tokens_per_s=B * T / t["score"], flops=sum(scr),
                   tflops_per_s=sum(scr) / t["score"] / 1e12, mfu=sum(scr) / t["score"] / peak_flops),
        update=dict(s=t["update"], tokens_per_s=B * T / t["update"], completion_tokens_per_s=B * G / t["update"],
                    flops=sum(upd), flops_dense=upd[0], flops_lm_head=upd[1], flops_attention=upd[2],
                    tflops_per_s=sum(upd) / t["update"] / 1e12, mfu=sum(upd) / t["update"] / peak_flops),
        step=dict(s=t["step"], tokens_per_s=B * T / t["step"]),
    )
    r, s, u = fig["rollout"], fig["score"], fig["update"]
    print(f"median of {a.steps} steps:")
    print(f"  rollout {r['s']:.3f} s: {r['new_tokens_per_s']:.0f} new tokens/s; prefill {r['prefill_s']:.3f} s "
          f"({r['prefill_tokens_per_s']:.0f} tokens/s), decode {r['decode_s']:.3f} s" +
          (f" ({r['decode_tokens_per_s']:.0f} tokens/s, {r['decode_gbps']:.1f} GB/s of weights + KV cache = "
           f"{100 * r['decode_roofline']:.1f}% of {a.peak_gbps:g} GB/s)" if G > 1 else ""))
    print(f"  score   {s['s']:.3f} s: {s['tokens_per_s']:.0f} tokens/s, {s['tflops_per_s']:.2f} TFLOP/s = "
          f"{100 * s['mfu']:.1f}% of {a.peak_tflops:g}")
    print(f"  update  {u['s']:.3f} s: {u['tokens_per_s']:.0f} tokens/s, {u['tflops_per_s']:.2f} TFLOP/s = MFU "
          f"{100 * u['mfu']:.1f}% of {a.peak_tflops:g} (6 x non-embedding params x tokens + 6 x LM head x "
          f"completion tokens + causal attention)")
    print(f"  step    {t['step']:.3f} s: {B * T / t['step']:.0f} tokens/s (prompt + completion)")
    memory = torch.cuda.max_memory_allocated() / GIB if a.device == "cuda" else None
    if memory is not None:
        print(f"  peak memory allocated {memory:.1f} GiB (estimated {plan['peak'] / GIB:.1f})")
    print(json.dumps(dict(
        mode="step", **common_fields(a), micro_batch=a.micro_batch, micro_batch_halvings=halvings,
        teacher_preset=a.teacher_preset,
        student_params=n_s, student_params_nonembedding=nonemb_s, teacher_params=n_t,
        teacher_params_nonembedding=nonemb_t, peak_tflops=a.peak_tflops, peak_gbps=a.peak_gbps,
        max_memory_gib=memory, planned_memory_gib=plan["peak"] / GIB, **fig)))


def main():
    a = parse()
    if a.dry_run:
        dry_run(a)
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.mode == "model":
        run_model_mode(a)
    else:
        run_step_mode(a)


if __name__ == "__main__":
    main()
