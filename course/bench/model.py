"""The reference GPT-2 beside HuggingFace's (`python -m course.bench model` and `gpt2`): training
throughput at the course model's shape, and chapter 7's GPT-2 small forward pass and generation."""

import os
import time


def bench_model(steps: int = 20) -> dict:
    """Training tokens per second at COURSE_MODEL (batch of COURSE_TRAINING): the reference
    with each attention, and HuggingFace's GPT2LMHeadModel of the same shape beside them.

    Each figure is the median wall time of `steps` optimizer steps after one warm-up step, the
    contenders taking turns step by step, on
    random tokens (the speed does not depend on the text), with the threads the course model
    trains with. Wall time, as a training run feels it: other programs on the machine slow it.
    """
    import torch
    import torch.nn.functional as F

    from course.models.train_course_model import COURSE_TRAINING
    from solutions.config import COURSE_MODEL
    from solutions.training import param_groups, window_loss
    from solutions.transformer import Transformer

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg, batch = COURSE_MODEL, COURSE_TRAINING.batch_size
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, cfg.d_vocab, (steps + 1, batch, cfg.n_ctx + 1), generator=g)

    def huggingface_loss(model, w):
        logits = model(w[:, :-1]).logits
        return F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())

    contenders = {
        "reference, explicit softmax": (lambda: Transformer(cfg), window_loss),
        "reference, fused (SDPA, one QKV product)": (
            lambda: Transformer(cfg, fused=True),
            window_loss,
        ),
        "HuggingFace GPT2LMHeadModel (sdpa)": (lambda: _huggingface_gpt2(cfg), huggingface_loss),
    }
    runs = {}
    for name, (build, loss_of) in contenders.items():
        torch.manual_seed(0)
        model = build().train()
        runs[name] = (model, loss_of, torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3), [])
    # Round robin, a step of each in turn, so that a slow spell of the machine hits all alike.
    for w in windows:
        for model, loss_of, optimizer, times in runs.values():
            start = time.perf_counter()
            loss = loss_of(model, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    result, sizes = {}, {}
    for name, (model, _, _, times) in runs.items():
        step_s = sorted(times[1:])[len(times[1:]) // 2]
        result[name] = batch * cfg.n_ctx / step_s
        sizes[name] = sum(p.numel() for p in model.parameters())
    print(
        f"Training throughput at COURSE_MODEL (batch {batch} x {cfg.n_ctx} tokens, "
        f"{torch.get_num_threads()} threads), median of {steps} steps:"
    )
    baseline = result["HuggingFace GPT2LMHeadModel (sdpa)"]
    for name, tokens_per_s in result.items():
        print(
            f"  {name:<45}{tokens_per_s:8,.0f} tokens/s  {tokens_per_s / baseline:5.2f}x  "
            f"({sizes[name] / 1e6:.2f}M parameters)"
        )
    return result


def bench_gpt2(repeats: int = 3, new_tokens: int = 100) -> dict:
    """Chapter 7: GPT-2 small (random weights, the same in both) in the reference and in
    HuggingFace's GPT2LMHeadModel. (a) A forward pass over one batch, (b) greedy generation
    of `new_tokens` tokens after a 10-token prompt: the reference with its KV cache (fused and
    explicit) and without, and HuggingFace's `generate` with its cache and without, which must
    agree token for token. Each contender is set against HuggingFace's like it: a cached
    generation against its cached `generate`, an uncached one against its uncached.

    Median wall time of `repeats` runs (the contenders taking turns), no gradients, the
    machine's default threads.
    """
    import torch

    from solutions.config import Config
    from solutions.gpt2 import to_huggingface
    from solutions.sampling import generate
    from solutions.transformer import Transformer

    torch.manual_seed(0)
    explicit = Transformer(Config()).eval()
    with torch.no_grad():
        explicit.unembed.b_U.zero_()
    fused = Transformer(Config(), fused=True).eval()
    fused.load_state_dict(explicit.state_dict())
    hf_model = to_huggingface(explicit)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 50257, (2, 128), generator=g)
    prompt = torch.randint(0, 50257, (1, 10), generator=g)

    def hf_generate(use_cache: bool):
        out = hf_model.generate(
            prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, use_cache=use_cache
        )
        return out[0, prompt.shape[1] :].tolist()

    forward = {
        "reference, explicit": lambda: explicit(batch),
        "reference, fused": lambda: fused(batch),
        "HuggingFace GPT2LMHeadModel": lambda: hf_model(batch).logits,
    }
    generation = {
        "reference, fused, KV cache": lambda: generate(
            fused, prompt.tolist(), new_tokens, temperature=0.0
        )[0],
        "reference, explicit, KV cache": lambda: generate(
            explicit, prompt.tolist(), new_tokens, temperature=0.0
        )[0],
        "reference, fused, no cache": lambda: generate(
            fused, prompt.tolist(), new_tokens, temperature=0.0, use_cache=False
        )[0],
        "HuggingFace generate (no cache)": lambda: hf_generate(use_cache=False),
        "HuggingFace generate (cache)": lambda: hf_generate(use_cache=True),
    }
    results = {}
    for title, contenders, unit in [
        (f"GPT-2 small forward pass, batch {tuple(batch.shape)}", forward, "s"),
        (f"GPT-2 small, {new_tokens} tokens of greedy generation", generation, "s"),
    ]:
        times = {name: [] for name in contenders}
        outputs = {}
        with torch.no_grad():
            for _ in range(repeats):
                for name, run in contenders.items():
                    start = time.perf_counter()
                    outputs[name] = run()
                    times[name].append(time.perf_counter() - start)
        medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        print(f"{title}, median of {repeats}, {torch.get_num_threads()} threads:")
        for name, seconds in medians.items():
            baseline = medians[_huggingface_like(name, list(contenders))]
            print(
                f"  {name:<34}{seconds:8.3f} {unit}  {baseline / seconds:5.2f}x HuggingFace's speed"
            )
        values = list(outputs.values())
        if isinstance(values[0], list):
            same = all(v == values[0] for v in values)
        else:
            same = all((v - values[0]).abs().max().item() < 1e-3 for v in values)
        print(f"  all agree: {same}")
        results[title] = medians
    return results


def _huggingface_like(name: str, names: list[str]) -> str:
    """HuggingFace's contender to set `name` against: the one without a cache for a
    generation without one, else the last (HuggingFace's own default)."""
    uncached = [n for n in names if n.startswith("HuggingFace") and "no cache" in n]
    return uncached[0] if "no cache" in name and uncached else names[-1]


def _huggingface_gpt2(cfg):
    """GPT2LMHeadModel with the reference's shape: untied unembedding, no dropout."""
    from transformers import GPT2LMHeadModel

    from solutions.gpt2 import hf_config

    return GPT2LMHeadModel(hf_config(cfg, tied=False))
