"""Chapter 7: the course's Transformer is GPT-2 small, parameter for parameter.

`parameter_count` counts it from the config; `hf_to_course` and `course_to_hf` translate
between HuggingFace's GPT-2 state dict and the course's, so that either model runs the
other's weights; `load_gpt2` opens the real pretrained weights when they are on this
machine (never downloading them).
"""

import os
from pathlib import Path

import einops
import torch
from torch import Tensor

from solutions.config import Config
from solutions.scaling import exact_params
from solutions.transformer import Transformer

# The published size of GPT-2 small: its unembedding is W_Eᵀ (tied) and it has no b_U.
GPT2_SMALL_PARAMETERS = 124_439_808


def parameter_count(cfg: Config, tied: bool = False) -> int:
    """The parameters of Transformer(cfg), from the config alone. `tied=True` counts GPT-2's
    own layout instead: the unembedding reuses W_E (W_U = W_Eᵀ) and there is no b_U."""
    # Chapter 6's exact count, under the name this chapter gives it.
    return exact_params(cfg, tied)


# --- The two layouts ---------------------------------------------------------------------
# HuggingFace's GPT-2 keeps each block's attention and MLP weights in `Conv1D` modules, which
# compute x @ W + b with W stored [in, out]: the course's orientation, not nn.Linear's
# [out, in]. Its attention fuses W_Q, W_K, W_V side by side in one `c_attn` matrix
# [d_model, 3·d_model], each third holding the heads one after another. Its unembedding
# `lm_head` is an nn.Linear (weight [d_vocab, d_model]), tied to the token embedding `wte`,
# without a bias.

# Each third of c_attn as the course's heads, and back (the checkers use both).
TO_HEADS = "d_model (n_heads d_head) -> n_heads d_model d_head"
FROM_HEADS = "n_heads d_model d_head -> d_model (n_heads d_head)"


def gpt2_names(cfg: Config) -> list[tuple[str, list[str], str | None]]:
    """The one table both converters walk: for each tensor of GPT2LMHeadModel, its name, the
    course's names for what it holds (several side by side along its last axis), and the
    einops pattern from HuggingFace's layout to the course's (None: the same layout).
    Reversed, the pattern goes back."""
    bias_to_heads = "(n_heads d_head) -> n_heads d_head"
    rows_to_heads = "(n_heads d_head) d_model -> n_heads d_head d_model"  # c_proj's rows
    rows = [
        ("transformer.wte.weight", "embed.W_E", None),
        ("transformer.wpe.weight", "pos_embed.W_pos", None),
    ]
    for layer in range(cfg.n_layers):
        h, b = f"transformer.h.{layer}.", f"blocks.{layer}."
        rows += [
            (h + "ln_1.weight", b + "ln1.w", None),
            (h + "ln_1.bias", b + "ln1.b", None),
            # Q, K, V in that order; within each third, head 0's d_head columns come first.
            (h + "attn.c_attn.weight", [b + f"attn.W_{n}" for n in "QKV"], TO_HEADS),
            (h + "attn.c_attn.bias", [b + f"attn.b_{n}" for n in "QKV"], bias_to_heads),
            (h + "attn.c_proj.weight", b + "attn.W_O", rows_to_heads),
            (h + "attn.c_proj.bias", b + "attn.b_O", None),
            (h + "ln_2.weight", b + "ln2.w", None),
            (h + "ln_2.bias", b + "ln2.b", None),
            # Conv1D is already [in, out], as the course's W_in and W_out: no transpose.
            (h + "mlp.c_fc.weight", b + "mlp.W_in", None),
            (h + "mlp.c_fc.bias", b + "mlp.b_in", None),
            (h + "mlp.c_proj.weight", b + "mlp.W_out", None),
            (h + "mlp.c_proj.bias", b + "mlp.b_out", None),
        ]
    rows += [
        ("transformer.ln_f.weight", "ln_final.w", None),
        ("transformer.ln_f.bias", "ln_final.b", None),
        # lm_head is an nn.Linear, [d_vocab, d_model].
        ("lm_head.weight", "unembed.W_U", "d_vocab d_model -> d_model d_vocab"),
    ]
    return [(hf, [course] if isinstance(course, str) else course, p) for hf, course, p in rows]


def relaid(t: Tensor, pattern: str | None, cfg: Config, back: bool = False) -> Tensor:
    """t rearranged by a pattern of `gpt2_names` (read right to left if `back`)."""
    if pattern is None:
        return t
    if back:
        pattern = " -> ".join(reversed(pattern.split(" -> ")))
    heads = {"n_heads": cfg.n_heads} if "n_heads" in pattern else {}
    return einops.rearrange(t, pattern, **heads)


def hf_to_course(hf: dict[str, Tensor], cfg: Config) -> dict[str, Tensor]:
    """A GPT2LMHeadModel state dict as the state dict of the course's Transformer(cfg)."""
    # A checkpoint saved with tied weights may leave lm_head out, since it is wte.
    hf = {"lm_head.weight": hf["transformer.wte.weight"], **hf}
    state = {}
    for hf_name, names, pattern in gpt2_names(cfg):
        for name, part in zip(names, hf[hf_name].chunk(len(names), dim=-1), strict=True):
            state[name] = relaid(part, pattern, cfg)
    # GPT-2 has no unembedding bias: b_U is zero.
    state["unembed.b_U"] = torch.zeros(cfg.d_vocab, dtype=state["unembed.W_U"].dtype)
    return state


def course_to_hf(state: dict[str, Tensor], cfg: Config) -> dict[str, Tensor]:
    """The course's Transformer(cfg) state dict as a GPT2LMHeadModel's (load it into a model
    built with `hf_config(cfg, tied=False)` unless W_U is W_Eᵀ). GPT-2 has nowhere to put
    b_U, so a nonzero b_U raises ValueError rather than being dropped."""
    if state["unembed.b_U"].any():
        raise ValueError(
            "GPT-2 has no unembedding bias: this model's b_U is not zero, so GPT2LMHeadModel "
            "cannot compute its logits"
        )
    hf = {}
    for hf_name, names, pattern in gpt2_names(cfg):
        parts = [relaid(state[name], pattern, cfg, back=True) for name in names]
        hf[hf_name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return hf


def hf_config(cfg: Config, tied: bool = True):
    """The transformers.GPT2Config of the same shape as Config `cfg`, dropout off."""
    from transformers import GPT2Config

    assert cfg.n_heads * cfg.d_head == cfg.d_model, "GPT2Config has d_head = d_model / n_heads"
    return GPT2Config(
        vocab_size=cfg.d_vocab,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_mlp,
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.layer_norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=tied,
        # GPT-2's <|endoftext|> (50256) where the vocabulary has it; none in a smaller one.
        bos_token_id=50256 if cfg.d_vocab > 50256 else None,
        eos_token_id=50256 if cfg.d_vocab > 50256 else None,
    )


def config_from_hf(config) -> Config:
    """The course's Config of a transformers.GPT2Config."""
    return Config(
        d_model=config.n_embd,
        d_vocab=config.vocab_size,
        n_ctx=config.n_positions,
        d_head=config.n_embd // config.n_head,
        d_mlp=config.n_inner or 4 * config.n_embd,
        n_heads=config.n_head,
        n_layers=config.n_layer,
        layer_norm_eps=config.layer_norm_epsilon,
    )


def from_huggingface(hf_model, fused: bool = False) -> Transformer:
    """The course's Transformer holding a GPT2LMHeadModel's weights (eval mode)."""
    cfg = config_from_hf(hf_model.config)
    model = Transformer(cfg, fused=fused)
    model.load_state_dict(hf_to_course(hf_model.state_dict(), cfg), strict=True)
    return model.eval()


def to_huggingface(model: Transformer):
    """A GPT2LMHeadModel holding the course model's weights (eval mode); its lm_head is
    untied unless W_U is W_Eᵀ."""
    from transformers import GPT2LMHeadModel

    tied = torch.equal(model.unembed.W_U, model.embed.W_E.T)
    hf_model = GPT2LMHeadModel(hf_config(model.cfg, tied=tied))
    hf_model.load_state_dict(course_to_hf(model.state_dict(), model.cfg), strict=True)
    return hf_model.eval()


# --- The real GPT-2 ----------------------------------------------------------------------
# OpenAI's weights are 500 MB: the course never downloads them. Where they already are (a
# folder `save_pretrained` wrote, or HuggingFace's cache after a `from_pretrained("gpt2")`
# made elsewhere), `load_gpt2` opens them offline.

GPT2_ENV = "GPT2_WEIGHTS"  # a folder holding config.json and model.safetensors
HUB_NAMES = ("openai-community/gpt2", "gpt2")


def load_gpt2(source: str | Path | None = None, fused: bool = True) -> Transformer:
    """GPT-2 small's pretrained weights in the course's Transformer, from `source` (a folder
    `save_pretrained` wrote), else from $GPT2_WEIGHTS, else from HuggingFace's cache.

    Never downloads: raises FileNotFoundError, saying where it looked, when none has them.
    """
    from transformers import GPT2LMHeadModel

    candidates = [source] if source is not None else [os.environ.get(GPT2_ENV), *HUB_NAMES]
    looked = []
    for candidate in [c for c in candidates if c]:
        looked.append(str(candidate))
        try:
            hf_model = GPT2LMHeadModel.from_pretrained(candidate, local_files_only=True)
        except (OSError, ValueError):
            continue
        return from_huggingface(hf_model, fused=fused)
    raise FileNotFoundError(
        "GPT-2's pretrained weights are not on this machine (looked in: "
        f"{', '.join(looked)}; the course never downloads them). To use them, set "
        f"{GPT2_ENV} to a folder holding GPT-2's config.json and model.safetensors, or run "
        "`GPT2LMHeadModel.from_pretrained('gpt2')` once where there is a network."
    )
