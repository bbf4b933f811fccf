#!/usr/bin/env python3
"""PyTorch eager (CPU) timing of the step `opd bench model` times, so the two can be compared as a
ratio: one forward + backward of a Qwen3-family model, no optimizer (median ms over --steps), plus
batched greedy generation with a KV cache (median of --gen-reps calls).

    python3 bench/torch_step.py [--d-model 128 --layers 4 ... --threads 2]

The loss is the mean next-token cross entropy over the batch (the SFT loss); the vocabulary is
small, so the choice hardly changes the time. The LM head is untied. Weights use the
transformers default init: only the shapes matter for timing.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--ffn", type=int, default=384)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=8, help="prompt length for generation")
    ap.add_argument("--gen-reps", type=int, default=3, help="timed generate calls (median)")
    a = ap.parse_args()
    if a.prompt >= a.seq:
        ap.error("--prompt must be shorter than --seq")
    if a.heads % a.kv_heads:
        ap.error("--heads must be a multiple of --kv-heads")
    if min(a.steps, a.gen_reps) < 1:
        ap.error("--steps and --gen-reps must be at least 1")
    return a


def build(a):
    cfg = Qwen3Config(
        vocab_size=a.vocab, hidden_size=a.d_model, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
        intermediate_size=a.ffn, max_position_embeddings=a.seq,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        attention_bias=False, tie_word_embeddings=False, use_sliding_window=False)
    model = Qwen3ForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    return model.to(torch.float32)


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
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        loss.backward()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The median, so a burst of other work on a shared machine does not skew the ratio to opd.
    dt = statistics.median(times)
    tokens = a.batch * a.seq
    print(f"torch fwd+bwd: {tokens / dt:.0f} tokens/s, {dt * 1e3:.1f} ms/step, "
          f"{step_flops(a, model) / dt / 1e9:.2f} GFLOP/s (6*params*tokens + attention)")


def bench_generate(a, model):
    model.eval()
    prompt = torch.randint(0, a.vocab, (a.batch, a.prompt))
    new = a.seq - a.prompt
    # No EOS, fixed length: every sequence produces exactly `new` tokens.
    gen = GenerationConfig(do_sample=False, use_cache=True, max_new_tokens=new, min_new_tokens=new,
                           eos_token_id=None, pad_token_id=0, bos_token_id=None)
    mask = torch.ones_like(prompt)
    times = []
    with torch.no_grad():
        model.generate(prompt, attention_mask=mask, generation_config=gen)  # warm-up
        for _ in range(a.gen_reps):
            t0 = time.perf_counter()
            out = model.generate(prompt, attention_mask=mask, generation_config=gen)
            times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    assert out.shape == (a.batch, a.seq), out.shape
    print(f"torch generate: {a.batch * new / dt:.0f} new tokens/s "
          f"({a.batch} x {a.prompt}->{a.seq}, {dt * 1e3:.0f} ms, median of {a.gen_reps})")


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a)
    print(f"torch {torch.__version__}, {a.threads} threads, {sum(p.numel() for p in model.parameters())} "
          f"parameters, batch {a.batch} x seq {a.seq}")
    bench_step(a, model)
    bench_generate(a, model)


if __name__ == "__main__":
    main()
