#!/usr/bin/env python3
"""PyTorch's fused causal attention on the GPU, timed on the shapes `opd bench ops --device cuda`
times, so opd's kernels can be read against FlashAttention-2 (PyTorch's FLASH_ATTENTION backend
is FlashAttention-2) and cuDNN's fused SDPA (the CUDNN_ATTENTION backend) measured on the same
card in the same session.

    python3 bench/torch_attention.py [--quick]

Prints one line per (backend, shape): forward and forward+backward ms and TFLOP/s, counting FLOPs
as FlashAttention's papers do for causal attention: forward 4*B*H*T*T*D/2, backward 2.5x forward.
The L2 cache is flushed before every timed call, as opd's harness does.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [  # (B, H, Hkv, T, D): batch*heads fill the GPU; memory stays small at long T
    (16, 32, 8, 1024, 128), (8, 32, 8, 2048, 128), (4, 32, 8, 4096, 128), (2, 32, 8, 8192, 128),
    (16, 32, 8, 1024, 64), (8, 32, 8, 2048, 64), (4, 32, 8, 4096, 64), (2, 32, 8, 8192, 64),
]
QUICK = [(2, 4, 2, 256, 128), (2, 4, 2, 256, 64)]


def timed(fn, flush, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        flush.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    backends = {"flash2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    for B, H, Hkv, T, D in (QUICK if args.quick else SHAPES):
        # The layout opd uses, [B, T, H, D], seen by SDPA as [B, H, T, D] through a transpose (no copy).
        q = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
        k = torch.randn(B, T, Hkv, D, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        v = torch.randn(B, T, Hkv, D, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        # GQA expanded to full heads: not every backend takes enable_gqa, and the expansion is outside the timing.
        k = k.repeat_interleave(H // Hkv, dim=1).requires_grad_()
        v = v.repeat_interleave(H // Hkv, dim=1).requires_grad_()
        dout = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
        fwd_flops = 4.0 * B * H * T * T * D / 2
        for name, backend in backends.items():
            try:
                with sdpa_kernel(backend):
                    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    fwd_ms = timed(fwd, flush, args.repeats)

                    def fwd_bwd():
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        torch.autograd.grad(out, (q, k, v), dout)

                    fb_ms = timed(fwd_bwd, flush, args.repeats)
                print(f"{name:7s} B{B} H{H} T{T} D{D} causal: fwd {fwd_ms:.3f} ms {fwd_flops / fwd_ms / 1e9:.1f} TFLOP/s; "
                      f"fwd+bwd {fb_ms:.3f} ms {3.5 * fwd_flops / fb_ms / 1e9:.1f} TFLOP/s", flush=True)
            except RuntimeError as e:  # a backend that does not take this shape on this card
                print(f"{name:7s} B{B} H{H} T{T} D{D} causal: not available ({str(e).splitlines()[0][:100]})", flush=True)


if __name__ == "__main__":
    main()
