"""Chapter 7, second half: writing text. A model gives logits for the next token; a sampler
picks one; the token is appended and the model runs again.

The samplers work on the last position's logits, [batch, d_vocab]. `KVCache` keeps every
layer's keys and values, so each new token costs one position's work instead of the whole
sequence's; `forward_with_cache` runs a Transformer's own modules that way, with an
attention mask so that prompts of different lengths share one left-padded batch.
"""

from collections.abc import Callable

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from solutions.attention import Attention, attention_scores, to_heads
from solutions.fused import FusedAttention

# --- Samplers ----------------------------------------------------------------------------


def apply_penalties(
    logits: Float[Tensor, "batch d_vocab"],
    generated: Int[Tensor, "batch posn"],
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> Float[Tensor, "batch d_vocab"]:
    """OpenAI's penalties: each token's logit lowers by frequency_penalty for every time it
    was generated so far, and by presence_penalty once if it was generated at all."""
    counts = torch.zeros_like(logits).scatter_add_(
        -1, generated, torch.ones_like(generated, dtype=logits.dtype)
    )
    return logits - frequency_penalty * counts - presence_penalty * (counts > 0)


def repetition_penalty(
    logits: Float[Tensor, "batch d_vocab"], tokens: Int[Tensor, "batch posn"], penalty: float
) -> Float[Tensor, "batch d_vocab"]:
    """HuggingFace's penalty: each token that appears in `tokens` (prompt and generated) has
    its logit divided by `penalty` if positive, multiplied by it if negative, once however
    often it appears. penalty > 1 makes every seen token less likely."""
    seen = logits.gather(-1, tokens)
    return logits.scatter(-1, tokens, torch.where(seen < 0, seen * penalty, seen / penalty))


def top_k_filter(logits: Float[Tensor, "batch d_vocab"], k: int) -> Float[Tensor, "batch d_vocab"]:
    """The logits with all but the k largest of each row set to -inf (ties with the k-th kept)."""
    kth_largest = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(
    logits: Float[Tensor, "batch d_vocab"], p: float
) -> Float[Tensor, "batch d_vocab"]:
    """Nucleus filtering: keep the most probable tokens until their probabilities add up to
    at least p, set the rest to -inf. The most probable token is always kept; p >= 1 keeps
    them all."""
    if p >= 1:
        # Every token. The rule below would drop some: float32's running total of 50,257
        # sorted probabilities reaches 1.0 thousands of tokens before the last.
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token is kept while the tokens more probable than it hold less than p between them.
    mass_before = probs.cumsum(dim=-1) - probs
    drop = (mass_before >= p).scatter(-1, order, mass_before >= p)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: Float[Tensor, "batch d_vocab"],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """One token per row: greedy (the argmax) at temperature 0, else a draw from the softmax
    of logits / temperature, restricted to the top k, then to the nucleus of mass top_p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]


# --- The KV cache ------------------------------------------------------------------------


class KVCache:
    """Each layer's keys and values for every position seen so far, [batch, posn, n_heads,
    d_head]: a new token's query needs them all, and they never change once computed."""

    def __init__(self, n_layers: int):
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers

    def __len__(self) -> int:
        """How many positions it holds."""
        return 0 if self.keys[-1] is None else self.keys[-1].shape[1]

    def append(
        self,
        layer: int,
        k: Float[Tensor, "batch posn n_heads d_head"],
        v: Float[Tensor, "batch posn n_heads d_head"],
    ) -> tuple[
        Float[Tensor, "batch key_posn n_heads d_head"],
        Float[Tensor, "batch key_posn n_heads d_head"],
    ]:
        """Add the new positions' keys and values to layer `layer`'s; return all of them."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=1)
            v = torch.cat([self.values[layer], v], dim=1)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.keys + self.values if t is not None)


def visible_keys(
    n_new: int, attention_mask: Bool[Tensor, "batch key_posn"]
) -> Bool[Tensor, "batch 1 query_posn key_posn"]:
    """Which keys each of the n_new last positions may attend to: new query i sits at key
    position n_keys - n_new + i and sees that key and the real tokens before it. A padding
    position sees only itself, so that no row of the softmax is empty; no real token ever
    attends to it."""
    n_keys = attention_mask.shape[1]
    query_at = torch.arange(n_keys - n_new, n_keys, device=attention_mask.device)[:, None]
    key_at = torch.arange(n_keys, device=attention_mask.device)[None, :]
    return (key_at <= query_at) & (attention_mask[:, None, None, :] | (key_at == query_at))


def cached_attention(
    attn: Attention,
    normalized_resid_pre: Float[Tensor, "batch posn d_model"],
    cache: KVCache | None,
    layer: int,
    attention_mask: Bool[Tensor, "batch key_posn"],
) -> Float[Tensor, "batch posn d_model"]:
    """Attention's forward for the new positions only: their queries against the cached keys
    and their own. `attention_mask` says which of all key positions, cached and new, hold
    real tokens (False for left padding)."""
    q = to_heads(normalized_resid_pre, attn.W_Q, attn.b_Q)
    k = to_heads(normalized_resid_pre, attn.W_K, attn.b_K)
    v = to_heads(normalized_resid_pre, attn.W_V, attn.b_V)
    if cache is not None:
        k, v = cache.append(layer, k, v)
    visible = visible_keys(q.shape[1], attention_mask)
    attn_scores = attention_scores(q, k).masked_fill(~visible, float("-inf"))
    pattern = attn_scores.softmax(dim=-1)
    z = einops.einsum(
        pattern,
        v,
        "batch n_heads query_posn key_posn, batch key_posn n_heads d_head "
        "-> batch query_posn n_heads d_head",
    )
    attn_out = einops.einsum(
        z, attn.W_O, "batch posn n_heads d_head, n_heads d_head d_model -> batch posn d_model"
    )
    return attn_out + attn.b_O


def fused_cached_attention(
    attn: FusedAttention,
    normalized_resid_pre: Float[Tensor, "batch posn d_model"],
    cache: KVCache | None,
    layer: int,
    attention_mask: Bool[Tensor, "batch key_posn"],
) -> Float[Tensor, "batch posn d_model"]:
    """cached_attention for a model built with fused=True: the same function through
    F.scaled_dot_product_attention. With one new token a step, reading the weights
    is nearly all the work, so each head's W_Q, W_K, W_V is used where it lies (one batched
    product over heads) rather than rearranged into one matrix, a copy as large as the
    weights, on every step."""
    batch, n_new, d_model = normalized_resid_pre.shape
    # [n_heads, batch·posn, d_model]: the input, seen once per head without a copy.
    x = normalized_resid_pre.reshape(1, batch * n_new, d_model).expand(attn.cfg.n_heads, -1, -1)

    def project(W, b):  # -> [batch, posn, n_heads, d_head], the cache's layout
        return torch.baddbmm(b[:, None], x, W).unflatten(1, (batch, n_new)).permute(1, 2, 0, 3)

    q = project(attn.W_Q, attn.b_Q)
    k, v = project(attn.W_K, attn.b_K), project(attn.W_V, attn.b_V)
    if cache is not None:
        k, v = cache.append(layer, k, v)
    heads_first = [t.transpose(1, 2) for t in (q, k, v)]
    z = F.scaled_dot_product_attention(*heads_first, attn_mask=visible_keys(n_new, attention_mask))
    z = z.transpose(1, 2).reshape(batch * n_new, -1)
    return torch.addmm(attn.b_O, z, attn.W_O.flatten(0, 1)).view_as(normalized_resid_pre)


def forward_with_cache(
    model: nn.Module,
    tokens: Int[Tensor, "batch posn"],
    cache: KVCache | None = None,
    attention_mask: Bool[Tensor, "batch key_posn"] | None = None,
) -> Float[Tensor, "batch posn d_vocab"]:
    """The Transformer's forward pass for `tokens`, which follow the positions in `cache`
    (appended to it). `attention_mask` covers the cached positions and `tokens`; each real
    token's position counts only the real tokens before it, so left padding changes nothing."""
    n_keys = tokens.shape[1] + (len(cache) if cache is not None else 0)
    if attention_mask is None:
        attention_mask = torch.ones(tokens.shape[0], n_keys, dtype=torch.bool, device=tokens.device)
    positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)[:, -tokens.shape[1] :]
    residual = model.embed(tokens) + model.pos_embed.W_pos[positions]
    for layer, block in enumerate(model.blocks):
        # A model built with fused=True attends through fused kernels here too.
        fused = isinstance(block.attn, FusedAttention)
        attend = fused_cached_attention if fused else cached_attention
        residual = residual + attend(block.attn, block.ln1(residual), cache, layer, attention_mask)
        residual = residual + block.mlp(block.ln2(residual))
    return model.unembed(model.ln_final(residual))


# --- Generation --------------------------------------------------------------------------


def left_pad(
    prompts: list[list[int]], pad_token: int = 0
) -> tuple[Int[Tensor, "batch posn"], Bool[Tensor, "batch posn"]]:
    """Prompts of different lengths as one batch, padded on the left so that every prompt's
    last token is in the last column; the mask is True where a token is real."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_token, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            tokens[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = True
    return tokens, mask


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    eos_token_id: int | None = None,
    stop: Callable[[list[int]], bool] | None = None,
    seed: int = 0,
    use_cache: bool = True,
) -> list[list[int]]:
    """The new tokens after each prompt, all prompts run as one left-padded batch.

    prompts: token ids, one list per prompt, of any lengths. max_new_tokens: the most tokens
    added to each. temperature, top_k, top_p: sample_next_token's settings.
    frequency_penalty, presence_penalty: apply_penalties's, over the tokens generated so far
    (not the prompt). eos_token_id: a row that draws it stops, the token left out of its
    list. stop: a row also stops once stop(its new tokens) is True. seed: the draws come from
    torch.Generator().manual_seed(seed), one sample_next_token call per step for the whole
    batch, so that a seed gives the same tokens with the cache or without. use_cache: feed
    forward_with_cache only the new tokens, through a KVCache, or rerun the whole sequence at
    every step. Past the model's n_ctx, read the last n_ctx tokens only."""
    generator = torch.Generator().manual_seed(seed)
    tokens, mask = left_pad(prompts)
    n_prompt = tokens.shape[1]
    n_ctx = model.cfg.n_ctx if hasattr(model, "cfg") else tokens.shape[1] + max_new_tokens
    cache = KVCache(len(model.blocks)) if use_cache else None
    new_tokens: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    step_input = tokens
    for _ in range(max_new_tokens):
        window, window_mask = tokens[:, -n_ctx:], mask[:, -n_ctx:]
        if tokens.shape[1] > n_ctx and use_cache:
            # The window has moved: its positions start again at 0 (as nanoGPT crops), so no
            # cached key or value still holds. Start over from the window, at every step.
            cache, step_input = KVCache(len(model.blocks)), window
        if use_cache:
            logits = forward_with_cache(model, step_input, cache, window_mask)[:, -1]
        elif window_mask.all():
            logits = model(window)[:, -1]  # the plain model, with nothing cached or masked
        else:
            logits = forward_with_cache(model, window, None, window_mask)[:, -1]
        if frequency_penalty or presence_penalty:
            logits = apply_penalties(
                logits, tokens[:, n_prompt:], frequency_penalty, presence_penalty
            )
        next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step_input = next_token[:, None]
        for row, token in enumerate(next_token.tolist()):
            if done[row]:
                continue
            if token == eos_token_id:
                done[row] = True
                continue
            new_tokens[row].append(token)
            done[row] = stop is not None and stop(new_tokens[row])
        if all(done):
            break
    return new_tokens


def generate_text(
    model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, stop: str | None = None, **kw
) -> str:
    """The text a prompt continues with, cut before `stop` (a string) if it appears."""
    decode = tokenizer.decode

    def stop_here(tokens: list[int]) -> bool:
        return stop is not None and stop in decode(tokens)

    new = generate(model, [tokenizer.encode(prompt)], max_new_tokens, stop=stop_here, **kw)[0]
    text = decode(new)
    return text.split(stop)[0] if stop else text


# --- Beam search -------------------------------------------------------------------------


@torch.no_grad()
def beam_search(
    model: nn.Module,
    prompt: list[int],
    n_beams: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> list[tuple[list[int], float]]:
    """The n_beams best finished continuations beam search finds, best first, each with its
    score: its log-probability (summed over the new tokens) / n_new ** length_penalty.

    A beam finishes when it draws eos_token_id (kept as its last token) or reaches
    max_new_tokens. Stop once n_beams have finished with early_stopping=True; with False,
    once the best running beam, scored at its present length, cannot beat the worst
    finished one; with "never", the same, but scored at max_new_tokens when
    length_penalty > 0. HuggingFace's generate(num_beams=...) does all this.
    """
    beams, scores = torch.tensor([prompt]), torch.zeros(1)
    finished: list[tuple[list[int], float]] = []
    for n_new in range(1, max_new_tokens + 1):
        log_probs = model(beams)[:, -1].log_softmax(dim=-1)
        d_vocab = log_probs.shape[-1]
        # 2·n_beams candidates, so that n_beams go on even if n_beams of them end in EOS.
        top, index = (
            (scores[:, None] + log_probs).flatten().topk(min(2 * n_beams, log_probs.numel()))
        )
        running, running_scores = [], []
        full = len(finished) == n_beams
        for rank, (score, i) in enumerate(zip(top.tolist(), index.tolist(), strict=True)):
            sequence = beams[i // d_vocab].tolist()[len(prompt) :] + [i % d_vocab]
            if i % d_vocab == eos_token_id or n_new == max_new_tokens:
                # Only the n_beams best may finish; once n_beams have, early_stopping shuts.
                if rank < n_beams and not (full and early_stopping is True):
                    finished.append((sequence, score / n_new**length_penalty))
            elif len(running) < n_beams:
                running.append(prompt + sequence)
                running_scores.append(score)
        finished = sorted(finished, key=lambda pair: -pair[1])[:n_beams]
        if n_new == max_new_tokens or len(finished) == n_beams and early_stopping is True:
            break
        if len(finished) == n_beams:
            at = max_new_tokens if early_stopping == "never" and length_penalty > 0 else n_new
            if not running_scores[0] / at**length_penalty > finished[-1][1]:
                break  # the best running beam can no longer beat the worst finished one
        beams, scores = torch.tensor(running), torch.tensor(running_scores)
    return finished


class BigramModel(nn.Module):
    """A model whose next-token logits depend on the last token only: row t of `logits`
    follows token t. Small enough to work out by hand what every sampler must do."""

    def __init__(self, logits: Float[Tensor, "d_vocab d_vocab"]):
        super().__init__()
        self.logits = logits

    def forward(self, tokens: Int[Tensor, "batch posn"]) -> Float[Tensor, "batch posn d_vocab"]:
        return self.logits[tokens]
