"""Rollout generation throughput vs the memory-bandwidth bound of this machine.

    OMP_NUM_THREADS=1 python bench/generate.py [--batches 1,2,4,8,16] [--tokens 48] [--repeats 3]

`model.generate` with sampling (temperature 1, as in training) on the embedded SmolLM2-135M in fp32, exactly
`--tokens` new tokens per sequence (min_new_tokens = max_new_tokens), packaged eval prompts left-padded.
tokens/s = batch x tokens / wall time (prefill included, as in a GRPO rollout).

Bound: every decode step reads all weights once (the tied embedding is read as the output layer), so at batch B
the memory-bandwidth bound is B x bandwidth / weight_bytes tokens/s. Bandwidth is measured here with a 512 MiB
`dst.copy_(src)` (bytes moved = 2 x size: read + write), median of repeats, same thread count.
The training batch is prompts_per_step x num_generations of TrainConfig() (2 x 4 = 8).
Second reference, the matmul floor: the time of one decode step's weight matmuls alone (every nn.Linear on a
[batch, in] input, measured here). Above batch ~4 a single core is compute-bound, so the bandwidth bound
overstates what is reachable; the floor shows how much of a step is the model's arithmetic and how much is
everything around it (attention, cache updates, sampling, Python in `generate`).
Peak memory: VmHWM of this process (the model, the copy buffers and the largest batch's cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import peak_rss_mib  # noqa: E402  (first: sets threads before torch loads)


def copy_bandwidth(mib: int, repeats: int) -> float:
    """Bytes/s of a large tensor copy (read + write counted)."""
    import torch

    n = mib * 2**20 // 4
    src = torch.rand(n)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch both buffers
    times = []
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / statistics.median(times)


def matmul_floor(model, batch: int, repeats: int) -> float:
    """Seconds of one decode step's weight matmuls alone: every nn.Linear (lm_head included) applied to a
    [batch, in] input, back to back. No attention, sampling, cache or Python around them: a measured floor that
    covers both the bandwidth and the compute limit of this core at this batch size."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {m.in_features: torch.randn(batch, m.in_features) for m in linears}
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for m in linears:
                torch.nn.functional.linear(xs[m.in_features], m.weight)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copy-mib", type=int, default=512)
    args = ap.parse_args(argv)

    import torch

    from hmxfeel import chat, models
    from hmxfeel import prompts as prompts_mod
    from hmxfeel.config import TrainConfig

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    loaded = models.load("embedded", device="cpu")
    model, tok, family = loaded.model, loaded.tokenizer, loaded.family
    model.eval()
    wbytes = weight_bytes(model)
    batches = [int(b) for b in args.batches.split(",")]
    cfg = TrainConfig()
    train_batch = cfg.prompts_per_step * cfg.num_generations
    users = [p.prompt for p in prompts_mod.load(None).split("eval")]
    tok.padding_side = "left"

    def run(batch: int, seed: int) -> float:
        texts = [chat.render(tok, family, chat.messages(family, users[i % len(users)])) for i in range(batch)]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                pad_token_id=tok.pad_token_id,
            )
        dt = time.perf_counter() - t0
        assert out.shape[1] - enc["input_ids"].shape[1] == args.tokens
        return dt

    run(1, 0)  # warm-up
    # Interleave batch sizes and the bandwidth probe, so machine load drifts hit every row alike.
    times = {b: [] for b in batches}
    floors = {b: [] for b in batches}
    bws = []
    for r in range(args.repeats):
        bws.append(copy_bandwidth(args.copy_mib, 1))
        for b in batches:
            times[b].append(run(b, r))
            floors[b].append(matmul_floor(model, b, 3))
    bw = statistics.median(bws)

    print(
        f"# embedded SmolLM2-135M fp32, weights {wbytes / 2**20:.0f} MiB read per decode step; copy bandwidth "
        f"{bw / 1e9:.1f} GB/s ({args.copy_mib} MiB copy, median of {len(bws)}); {args.tokens} new tokens; "
        f"torch threads {torch.get_num_threads()}"
    )
    print()
    print(
        "| batch | median s | tokens/s | ms per decode step | bandwidth bound tok/s | % of bandwidth bound "
        "| matmul floor ms/step | % of matmul floor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    pct, pct_floor = {}, {}
    for b in batches:
        med = statistics.median(times[b])
        tps = b * args.tokens / med
        bound = b * bw / wbytes
        pct[b] = 100 * tps / bound
        floor_ms = 1000 * statistics.median(floors[b])
        pct_floor[b] = 100 * floor_ms / (1000 * med / args.tokens)
        print(
            f"| {b} | {med:.2f} | {tps:.1f} | {1000 * med / args.tokens:.1f} | {bound:.1f} | {pct[b]:.0f}% | "
            f"{floor_ms:.1f} | {pct_floor[b]:.0f}% |"
        )
    print(f"# peak RSS {peak_rss_mib():.0f} MiB")
    print()
    print("## ratios (medians, same run)")
    tps = {b: b * args.tokens / statistics.median(times[b]) for b in batches}
    if 1 in tps and batches[-1] != 1:
        print(f"tokens/s batch {batches[-1]} / batch 1 = {tps[batches[-1]] / tps[1]:.1f}x")
    if train_batch in pct:
        print(f"% of matmul floor at the training batch ({train_batch}) = {pct_floor[train_batch]:.0f}%")
        print(f"% of bandwidth bound at the training batch ({train_batch}) = {pct[train_batch]:.0f}%   (target >= 50%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
