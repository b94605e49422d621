"""Chapter 7's claim that the course's GPT-2 carries over to TransformerLens 4, checked: the
course model converted to HuggingFace's GPT2LMHeadModel (solutions.gpt2.to_huggingface)
opens in TransformerLens's TransformerBridge offline, gives the same logits, and chapter 5's
cache (solutions.residual.run_with_cache) equals the bridge's on every hook name both record.

GPT2Config has no d_head of its own (it is d_model / n_heads), so a model whose
n_heads * d_head differs from d_model cannot become a GPT2LMHeadModel, nor reach the bridge:
every configuration here has n_heads * d_head = d_model, with different head splits."""

import pytest
import torch
from transformer_lens.model_bridge.sources import build_bridge_from_module

from course.models.course_model import load_course_model
from solutions import gpt2
from solutions.config import TINY, Config
from solutions.residual import run_with_cache
from solutions.transformer import Transformer

# What each block must have in common at least: the stream, attention's inside, the MLP's
# neurons and both LayerNorms.
BLOCK_HOOKS = [
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "mlp.hook_pre",
    "mlp.hook_post",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "ln2.hook_scale",
    "ln2.hook_normalized",
]
TOLERANCE = 1e-4


def random_course_model(
    cfg: Config, fused: bool, tied: bool, seed: int, std: float = 0.3
) -> Transformer:
    """Transformer(cfg) with every parameter random (LayerNorm w and b and every bias too,
    far from their init of ones and zeros), b_U zero since GPT-2 has none."""
    torch.manual_seed(seed)
    model = Transformer(cfg, fused=fused).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
        model.unembed.b_U.zero_()
        if tied:  # GPT-2's own layout: the unembedding is W_Eᵀ
            model.unembed.W_U.copy_(model.embed.W_E.T)
    return model


def ln_input(ln: str, cache: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """The stream that LayerNorm `ln` (blocks.i.ln1, blocks.i.ln2, ln_final) reads."""
    if ln == "ln_final":
        return cache[f"blocks.{n_layers - 1}.hook_resid_post"]
    block, which = ln.rsplit(".", 1)
    return cache[f"{block}.hook_resid_pre" if which == "ln1" else f"{block}.hook_resid_mid"]


def max_difference(ours: torch.Tensor, theirs: torch.Tensor, name: str) -> float:
    assert ours.shape == theirs.shape, (
        f"{name}: ours is {tuple(ours.shape)}, TransformerLens's {tuple(theirs.shape)}"
    )
    difference = (ours - theirs).abs().max().item()
    assert difference < TOLERANCE, f"{name}: ours and TransformerLens's differ by {difference:.1e}"
    return difference


def compare(model: Transformer, tokens: torch.Tensor) -> tuple[set[str], float]:
    """Converts `model`, opens it in the bridge, runs both on `tokens`; asserts every shared
    hook name (and the logits) agree. Returns the shared names and the largest difference."""
    hf_model = gpt2.to_huggingface(model)
    bridge = build_bridge_from_module(hf_model, "GPT2LMHeadModel", hf_config=hf_model.config)
    with torch.no_grad():
        logits, cache = run_with_cache(model, tokens)
        their_logits, theirs = bridge.run_with_cache(tokens)
        forward = model(tokens)  # the model's own forward: the fused kernels where fused
    differences = [
        max_difference(logits, their_logits, "logits"),
        max_difference(forward, their_logits, "logits of the model's forward"),
    ]
    n_layers = model.cfg.n_layers
    shared = set(cache) & set(theirs)
    # Every name chapter 5 records, TransformerLens records too (it records more: each
    # submodule's hook_in and hook_out).
    assert shared == set(cache), f"not recorded by TransformerLens: {sorted(set(cache) - shared)}"
    expected = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale", "ln_final.hook_normalized"}
    expected |= {f"blocks.{i}.{hook}" for i in range(n_layers) for hook in BLOCK_HOOKS}
    assert shared == expected, sorted(shared ^ expected)
    for name in sorted(shared):
        ours, their = cache[name], theirs[name]
        if name.endswith("hook_normalized"):
            # A different meaning. TransformerLens 4's bridge records hook_normalized before
            # w and b, (x - mean) / scale; the course records LayerNorm's output, after w and
            # b, as HookedTransformer did. The bridge records that output as `{ln}.hook_out`.
            ln = name.removesuffix(".hook_normalized")
            differences.append(max_difference(ours, theirs[f"{ln}.hook_out"], name))
            x = ln_input(ln, cache, n_layers)
            centred = (x - x.mean(dim=-1, keepdim=True)) / cache[f"{ln}.hook_scale"]
            differences.append(max_difference(centred, their, f"{name} (before w and b)"))
        elif name.endswith("hook_attn_scores"):
            # The same scores, masked differently: the course writes -inf above the diagonal,
            # the bridge, as HuggingFace's GPT-2 does, the lowest float32. Both give
            # the future keys a probability of exactly zero.
            future = torch.ones_like(ours, dtype=torch.bool).triu(diagonal=1)
            assert (ours[future] == float("-inf")).all(), name
            assert (their[future] == torch.finfo(their.dtype).min).all(), name
            differences.append(max_difference(ours[~future], their[~future], name))
        else:
            differences.append(max_difference(ours, their, name))
    return shared, max(differences)


@pytest.mark.parametrize("fused", [False, True], ids=["explicit", "fused"])
@pytest.mark.parametrize(
    "cfg",
    [TINY, TINY.but(n_heads=6, d_head=8, n_layers=3, d_mlp=96, d_vocab=67)],
    ids=["TINY", "6-heads-3-layers"],
)
def test_transformer_lens_4_records_chapter_5s_cache_on_the_converted_model(cfg, fused):
    model = random_course_model(cfg, fused=fused, tied=False, seed=6)
    tokens = torch.randint(0, cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(7))
    shared, _ = compare(model, tokens)
    assert len(shared) == 4 + len(BLOCK_HOOKS) * cfg.n_layers


def test_transformer_lens_4_records_chapter_5s_cache_at_gpt2_small_widths_tied():
    # GPT-2 small's blocks (d_model 768, 12 heads of 64, d_mlp 3072) and its tied unembedding,
    # two of them and a smaller vocabulary: all twelve and 50,257 tokens take some 20 s on a
    # 2-core CPU, most of it making random weights, and exercise nothing more.
    cfg = Config(n_layers=2, d_vocab=1000)
    model = random_course_model(cfg, fused=True, tied=True, seed=8, std=0.02)
    tokens = torch.randint(0, cfg.d_vocab, (1, 12), generator=torch.Generator().manual_seed(9))
    shared, _ = compare(model, tokens)
    assert len(shared) == 4 + len(BLOCK_HOOKS) * cfg.n_layers


def test_transformer_lens_4_records_chapter_5s_cache_on_the_shipped_course_model():
    model, tokenizer = load_course_model()
    text = "The old keeper climbed the stairs of the lighthouse every evening to light the lamp."
    _, largest = compare(model, torch.tensor([tokenizer.encode(text)]))
    assert largest < TOLERANCE
