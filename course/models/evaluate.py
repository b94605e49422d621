"""How good is the course model? Baselines, losses, English it never saw, samples, model card.

Every loss is the mean cross-entropy in nats per token over the same scored positions: a
sequence of n tokens scores tokens 1..n-1, each predicted from what comes before it. The
first token is context only, for the transformer and for both baselines alike.
"""

import csv
import dataclasses
import json
import os
import platform
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor, nn

from solutions.training import evaluate

# Fixed so that a retrained model's card shows samples from the same prompts and seed.
SAMPLE_PROMPTS = ("Once upon a time", "The letter arrived on a cold morning, and", "He said that")
SAMPLE_SEED = 0
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOKENS = 60


class UnigramModel:
    """p(token) = (count + k) / (N + k * d_vocab): add-k smoothing, every token's loss finite.

    k = 1 (Laplace) suits a model fitted on millions of tokens, where it barely moves the
    frequent tokens. k = 0 is the plain frequency (maximum likelihood), the lowest loss any
    unigram model can reach on the very text it was fitted on; unseen tokens then cost inf.
    """

    def __init__(self, tokens: Int[Tensor, " posn"], d_vocab: int, k: float = 1.0):
        counts = torch.bincount(tokens.cpu(), minlength=d_vocab).double()
        self.log_probs = ((counts + k) / (counts.sum() + k * d_vocab)).log()

    def loss(self, tokens: Int[Tensor, " posn"]) -> float:
        """Mean -log p(token) over tokens[1:], the positions a next-token predictor is scored on."""
        return -self.log_probs[tokens[1:].cpu()].mean().item()


class BigramModel:
    """p(b | a): bigram counts with absolute discounting, interpolated with the unigram model.

    p(b | a) = max(c(a, b) - D, 0) / c(a) + D * n(a) / c(a) * p_unigram(b), where c(a) counts
    `a` as a predecessor and n(a) counts the distinct tokens seen after it. Each seen pair gives
    up D of its count to the unigram model, so the probabilities still sum to one, pairs never
    seen get a finite loss, and a predecessor never seen falls back to the unigram model. This
    is Kneser-Ney's discounting without its continuation counts; add-k on 4,096 x 4,096 pairs
    would instead hand most of a rare predecessor's probability to pairs that never occur.
    """

    def __init__(
        self, tokens: Int[Tensor, " posn"], d_vocab: int, discount: float = 0.75, k: float = 1.0
    ):
        assert 0 < discount <= 1, "a discount above 1 would make seen pairs' counts negative"
        tokens = tokens.cpu()
        self.d_vocab, self.discount = d_vocab, discount
        self.unigram = UnigramModel(tokens, d_vocab, k)
        # Only the pairs that occur are stored (sorted keys a * d_vocab + b), not a dense
        # d_vocab x d_vocab table.
        self.pairs, self.pair_counts = torch.unique(
            tokens[:-1] * d_vocab + tokens[1:], return_counts=True
        )
        self.context_counts = torch.bincount(tokens[:-1], minlength=d_vocab).double()
        self.followers = torch.bincount(self.pairs // d_vocab, minlength=d_vocab).double()

    def log_probs(self, prev: Int[Tensor, " posn"], nxt: Int[Tensor, " posn"]) -> Tensor:
        """log p(nxt[i] | prev[i]) for each i."""
        keys = prev * self.d_vocab + nxt
        at = torch.searchsorted(self.pairs, keys).clamp(max=len(self.pairs) - 1)
        pair = torch.where(self.pairs[at] == keys, self.pair_counts[at], 0).double()
        context = self.context_counts[prev]
        p_unigram = self.unigram.log_probs[nxt].exp()
        weight = self.discount * self.followers[prev] / context.clamp(min=1)
        p = (pair - self.discount).clamp(min=0) / context.clamp(min=1) + weight * p_unigram
        return torch.where(context > 0, p, p_unigram).log()

    def loss(self, tokens: Int[Tensor, " posn"]) -> float:
        """Mean -log p(token | previous token) over tokens[1:]."""
        tokens = tokens.cpu()
        return -self.log_probs(tokens[:-1], tokens[1:]).mean().item()


def model_loss(
    model: nn.Module, tokens: Int[Tensor, " posn"], n_ctx: int, batch_size: int = 16
) -> float:
    """The model's mean next-token cross-entropy (nats per token) on tokens[1:].

    The sequence is cut, from its start, into consecutive windows of n_ctx inputs whose targets
    are the same tokens shifted by one (the last window may be shorter), so every token after
    the first is predicted exactly once. The same tokens and batch_size give the same number.
    """
    assert len(tokens) >= 2, "a loss needs at least one token to predict"
    # Windows of n_ctx + 1 tokens (chapter 6b's): each one's last token, only a target there,
    # is the first input of the next.
    n_full = (len(tokens) - 1) // n_ctx
    total = 0.0
    if n_full:
        windows = torch.stack([tokens[s : s + n_ctx + 1] for s in range(0, n_full * n_ctx, n_ctx)])
        total += evaluate(model, windows, batch_size) * n_full * n_ctx
    tail = tokens[n_full * n_ctx :]
    if len(tail) > 1:
        total += evaluate(model, tail[None]) * (len(tail) - 1)
    return total / (len(tokens) - 1)


def sample(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = SAMPLE_TEMPERATURE,
    seed: int = SAMPLE_SEED,
    n_ctx: int | None = None,
) -> str:
    """The prompt and its continuation, drawn from softmax(logits / temperature) with a seeded
    generator, so a seed always gives the same text. temperature=0 picks the most likely token.
    The context is cropped to the last n_ctx tokens (default: model.cfg.n_ctx)."""
    n_ctx = n_ctx or model.cfg.n_ctx
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.tensor([tokenizer.encode(prompt)], device=device)
    assert tokens.shape[1] > 0, "the prompt must have at least one token"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(tokens[:, -n_ctx:])[0, -1].float()
                if temperature == 0:
                    nxt = logits.argmax(keepdim=True)
                else:
                    probs = F.softmax(logits / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=generator)
                tokens = torch.cat([tokens, nxt[None]], dim=1)
    finally:
        model.train(was_training)
    return tokenizer.decode(tokens[0].tolist())


@cache
def _unseen_english() -> dict:
    return json.loads(files("course").joinpath("data/unseen_english.json").read_text("utf-8"))


def unseen_texts() -> dict[str, str]:
    """Three short texts written for the course and never trained on: name -> text."""
    return dict(_unseen_english()["texts"])


def unseen_english_table(
    model: nn.Module, tokenizer, n_ctx: int, d_vocab: int, batch_size: int = 16
) -> dict[str, dict]:
    """For each unseen text: the model's loss, and that of a unigram model fitted on the text.

    The unigram model is the plain frequency of each token in the text itself (k = 0): no
    unigram model scores lower on that text, so it is the strongest one to beat. Smoothing
    would only take probability from the tokens that occur and give it to ones that do not.
    """
    table = {}
    for name, text in unseen_texts().items():
        tokens = torch.tensor(tokenizer.encode(text))
        table[name] = {
            "characters": len(text),
            "tokens": len(tokens),
            "model": model_loss(model, tokens, n_ctx, batch_size),
            # Fitted on the scored tokens, tokens[1:], so that it is exactly the best unigram.
            "unigram_on_text": UnigramModel(tokens[1:], d_vocab, k=0.0).loss(tokens),
        }
    return table


def describe_machine() -> str:
    """One line naming this machine: OS, CPU, core count, torch, and the GPU if there is one."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {gpu}"


def read_loss_log(path: str | Path) -> dict:
    """The lowest validation loss in a loss log, its step, and the last one.

    The log is CSV with a header, or JSON lines, with columns `step` and `val_loss` (empty or
    absent on steps without an evaluation).
    """
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    evals = [
        (int(row["step"]), float(row["val_loss"]))
        for row in rows
        if row.get("val_loss") not in (None, "")
    ]
    if not evals:
        return {"evaluations": 0}
    best_step, best = min(evals, key=lambda e: (e[1], e[0]))
    last_step, last = evals[-1]
    return {
        "evaluations": len(evals),
        "best_val_loss": best,
        "best_step": best_step,
        "last_val_loss": last,
        "last_step": last_step,
    }


def write_model_card(
    path: str | Path,
    *,
    model: nn.Module,
    tokenizer,
    cfg,
    train_tokens: Int[Tensor, " posn"],
    val_tokens: Int[Tensor, " posn"],
    summary: dict,
    loss_log_path: str | Path | None = None,
    batch_size: int = 16,
) -> dict:
    """Measure the model and write `path` (Markdown) and card.json next to it; return the numbers.

    `summary` is the training run's own record (steps, tokens seen, time, final losses, the
    machine); it is copied into the card as it is. Everything else here is computed.
    """
    path = Path(path)
    config = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else vars(cfg)
    validation = {
        "tokens": len(val_tokens),
        "n_ctx": cfg.n_ctx,
        "batch_size": batch_size,
        "model": model_loss(model, val_tokens, cfg.n_ctx, batch_size),
        "unigram": UnigramModel(train_tokens, cfg.d_vocab).loss(val_tokens),
        "bigram": BigramModel(train_tokens, cfg.d_vocab).loss(val_tokens),
    }
    card = {
        "config": config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"train_tokens": len(train_tokens), "val_tokens": len(val_tokens)},
        "training": {"machine": describe_machine(), **summary},
        "validation": validation,
        "unseen_english": unseen_english_table(
            model, tokenizer, cfg.n_ctx, cfg.d_vocab, batch_size
        ),
        "samples": [
            {
                "prompt": prompt,
                "temperature": SAMPLE_TEMPERATURE,
                "seed": SAMPLE_SEED,
                "text": sample(model, tokenizer, prompt, SAMPLE_TOKENS, n_ctx=cfg.n_ctx),
            }
            for prompt in SAMPLE_PROMPTS
        ],
    }
    if loss_log_path is not None:
        card["loss_log"] = {"file": Path(loss_log_path).name, **read_loss_log(loss_log_path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_card(card), encoding="utf-8")
    path.with_name("card.json").write_text(
        json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8"
    )
    return card


# How the card names the training summary's usual keys; any other key is shown as it is.
LABELS = {
    "steps": "steps",
    "tokens_seen": "tokens seen",
    "time_s": "training time (s)",
    "final_train_loss": "final training loss",
    "final_val_loss": "final validation loss",
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def render_card(card: dict) -> str:
    """The model card in Markdown, from the numbers write_model_card computed."""
    val, data = card["validation"], card["data"]
    lines = [
        "# The course model",
        "",
        "A small GPT-2 (the course's reference implementation) trained from scratch on the",
        "course corpus, from GPT-2's initialisation (weights normal with standard deviation",
        "`init_range`, W_O and W_out √(2·n_layers) times smaller). Losses are mean",
        "cross-entropy in nats per token, each token predicted from the ones before it. It has",
        "no unembedding bias (b_U is zero), as GPT-2 has none: `solutions.gpt2.to_huggingface`",
        "turns it into a `GPT2LMHeadModel` as it is.",
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| `{k}` | {_fmt(v)} |" for k, v in card["config"].items()),
        f"| parameters | {_fmt(card['parameters'])} |",
        "",
        "## Data",
        "",
        "Public-domain books, listed with their split in `course/data/english_books.json` (see",
        "`course/data/README.md`); split by book, so validation is on books never trained on;",
        f"{_fmt(data['train_tokens'])} training tokens, {_fmt(data['val_tokens'])} validation tokens.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        *(f"| {LABELS.get(k, k)} | {_fmt(v)} |" for k, v in card["training"].items()),
        "",
    ]
    if log := card.get("loss_log"):
        if log["evaluations"]:
            lines += [
                f"Loss log `{log['file']}`: {log['evaluations']} evaluations; the lowest validation",
                f"loss, {_fmt(log['best_val_loss'])}, at step {log['best_step']}; the last,",
                f"{_fmt(log['last_val_loss'])}, at step {log['last_step']}.",
                "",
            ]
    lines += [
        "## Validation loss against baselines",
        "",
        f"On the {_fmt(val['tokens'])} validation tokens (windows of {val['n_ctx']} tokens);",
        "the unigram (add-one) and bigram (absolute discounting, D = 0.75) models are fitted",
        "on the training tokens.",
        "",
        "| model | nats per token |",
        "|---|---|",
        f"| unigram | {val['unigram']:.3f} |",
        f"| bigram | {val['bigram']:.3f} |",
        f"| course model | {val['model']:.3f} |",
        "",
        "## English it never saw",
        "",
        "Texts written for the course (`course/data/unseen_english.json`), against a unigram",
        "model fitted on the very text it is scored on (each token's frequency in that text).",
        "",
        "| text | characters | tokens | course model | unigram of the text |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['characters']:,} | {r['tokens']:,} | {r['model']:.3f} "
            f"| {r['unigram_on_text']:.3f} |"
            for name, r in card["unseen_english"].items()
        ),
        "",
        "## Samples",
        "",
    ]
    for s in card["samples"]:
        lines += [
            f"Prompt {s['prompt']!r}, temperature {s['temperature']}, seed {s['seed']}:",
            "",
            "```text",
            s["text"].replace("```", "'''"),
            "```",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "`make corpus` builds the corpus from the books (`BOOKS=DIR`, or `DOWNLOAD=1`), then",
        "`make course-model` trains this model and rewrites this folder. Training is seeded and",
        "runs on two CPU threads, so the same books give the same weights on the same kind of",
        "machine.",
        "",
    ]
    return "\n".join(lines)
