"""The reference GPT-2 (solutions/layernorm.py, mlp.py, transformer.py): TransformerLens names
and shapes, each module against an independent computation, and the fused attention equal to
the explicit one. Then chapter 5's checkers of the block and the model: they reject post-norm,
missing residuals, swapped LayerNorms, parallel or reordered layers, a missing ln_final or
positional embedding, and blocks applied in the wrong order or not all of them."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import NewGELUActivation

from checks import transformer as checks
from solutions.attention import Attention
from solutions.config import TINY
from solutions.embeddings import next_token_log_probs
from solutions.fused import FusedAttention, FusedLayerNorm
from solutions.gpt2 import hf_to_course
from solutions.layernorm import LayerNorm
from solutions.mlp import MLP, gelu_new
from solutions.transformer import Transformer, TransformerBlock, lm_loss
from support import assert_accepts, assert_rejects

CFG = TINY


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, biases and LayerNorm w included, so none can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def stream(batch=3, posn=7, seed=1):
    return torch.randn(batch, posn, CFG.d_model, generator=torch.Generator().manual_seed(seed))


def test_parameter_names_and_shapes_are_transformer_lens_ones():
    model = Transformer(CFG)
    d, h, dh, m, v = CFG.d_model, CFG.n_heads, CFG.d_head, CFG.d_mlp, CFG.d_vocab
    expected = {"embed.W_E": (v, d), "pos_embed.W_pos": (CFG.n_ctx, d)}
    for layer in range(CFG.n_layers):
        block = {
            "ln1.w": (d,), "ln1.b": (d,), "ln2.w": (d,), "ln2.b": (d,),
            "attn.W_Q": (h, d, dh), "attn.W_K": (h, d, dh), "attn.W_V": (h, d, dh),
            "attn.W_O": (h, dh, d), "attn.b_Q": (h, dh), "attn.b_K": (h, dh),
            "attn.b_V": (h, dh), "attn.b_O": (d,),
            "mlp.W_in": (d, m), "mlp.b_in": (m,), "mlp.W_out": (m, d), "mlp.b_out": (d,),
        }  # fmt: skip
        expected |= {f"blocks.{layer}.{name}": shape for name, shape in block.items()}
    expected |= {"ln_final.w": (d,), "ln_final.b": (d,), "unembed.W_U": (d, v), "unembed.b_U": (v,)}
    assert {k: tuple(p.shape) for k, p in model.state_dict().items()} == expected
    assert isinstance(model.blocks, torch.nn.ModuleList)
    assert all(module.cfg is CFG for module in model.modules() if hasattr(module, "cfg"))


def test_gpt2_initialisation():
    """GPT-2's scheme, parameter by parameter, as HuggingFace's GPT2LMHeadModel draws it: W_O
    and W_out (its c_proj) at 0.02 / √(2·n_layers), every other matrix at 0.02."""
    cfg = CFG.but(d_model=256, d_mlp=1024, d_head=64, n_layers=8, d_vocab=512, n_ctx=64)
    torch.manual_seed(0)
    model = Transformer(cfg)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_embd=256, n_layer=8, n_head=4, n_positions=64, vocab_size=512)
    )
    theirs = hf_to_course(hf.state_dict(), cfg)
    residual_std = 0.02 / math.sqrt(2 * 8)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if ".ln" in f".{name}" and leaf == "w":
            assert torch.equal(p, torch.ones_like(p)), name
        elif leaf.startswith("b"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            std = residual_std if leaf in ("W_O", "W_out") else 0.02
            assert abs(p.mean().item()) < std / 10 and abs(p.std().item() - std) < std / 10, name
            assert p.std().item() == pytest.approx(theirs[name].std().item(), rel=0.1), name


def test_layer_norm_equals_torch():
    ln = randomized(LayerNorm(CFG))
    x = stream() * 5 + 3
    expected = F.layer_norm(x, (CFG.d_model,), ln.w, ln.b, eps=CFG.layer_norm_eps)
    torch.testing.assert_close(ln(x), expected)


def test_layer_norm_eps_is_inside_the_square_root():
    ln = LayerNorm(CFG.but(layer_norm_eps=1.0))
    x = stream()
    centred = x - x.mean(-1, keepdim=True)
    expected = centred / (centred.pow(2).mean(-1, keepdim=True) + 1.0).sqrt()
    torch.testing.assert_close(ln(x), expected)


def test_gelu_new_is_huggingface_gpt2_gelu():
    x = torch.linspace(-8, 8, 1001)
    torch.testing.assert_close(gelu_new(x), NewGELUActivation()(x))
    torch.testing.assert_close(gelu_new(x), F.gelu(x, approximate="tanh"))
    # ...and not the exact GELU, though close to it.
    assert 1e-5 < (gelu_new(x) - F.gelu(x)).abs().max() < 1e-3


def test_mlp_equals_the_formula():
    mlp = randomized(MLP(CFG))
    x = stream()
    hidden = F.gelu(x @ mlp.W_in + mlp.b_in, approximate="tanh")
    torch.testing.assert_close(mlp(x), hidden @ mlp.W_out + mlp.b_out)


def test_block_is_pre_norm_with_two_residual_additions():
    block = randomized(TransformerBlock(CFG))
    x = stream()
    mid = x + block.attn(block.ln1(x))
    torch.testing.assert_close(block(x), mid + block.mlp(block.ln2(mid)))


def test_transformer_composes_its_modules():
    model = randomized(Transformer(CFG))
    tokens = torch.randint(0, CFG.d_vocab, (2, 9), generator=torch.Generator().manual_seed(2))
    residual = model.embed.W_E[tokens] + model.pos_embed.W_pos[:9]
    for block in model.blocks:
        residual = block(residual)
    x = F.layer_norm(residual, (CFG.d_model,), model.ln_final.w, model.ln_final.b, eps=1e-5)
    torch.testing.assert_close(model(tokens), x @ model.unembed.W_U + model.unembed.b_U)


def test_transformer_is_causal():
    model = randomized(Transformer(CFG))
    tokens = torch.randint(0, CFG.d_vocab, (1, 12), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[0, 8] = (tokens[0, 8] + 1) % CFG.d_vocab
    torch.testing.assert_close(model(tokens)[:, :8], model(changed)[:, :8])
    assert not torch.allclose(model(tokens)[:, 8], model(changed)[:, 8])


def test_lm_loss_is_mean_negative_next_token_log_prob():
    logits = torch.randn(2, 6, CFG.d_vocab)
    tokens = torch.randint(0, CFG.d_vocab, (2, 6))
    torch.testing.assert_close(
        lm_loss(logits, tokens), -next_token_log_probs(logits, tokens).mean()
    )
    # An untrained model is close to uniform: about log(d_vocab) nats.
    model = Transformer(CFG)
    assert abs(lm_loss(model(tokens), tokens).item() - math.log(CFG.d_vocab)) < 0.1


def assert_same_function(explicit: torch.nn.Module, fused: torch.nn.Module, x: torch.Tensor):
    """Same outputs, input gradients and parameter gradients, in float64, so that the two
    orders of summation agree to 1e-7 relative: equal."""
    explicit, fused = explicit.double(), fused.double()
    fused.load_state_dict(explicit.state_dict())
    x = x.double()
    x_fused = x.clone().requires_grad_()
    x.requires_grad_()
    out, out_fused = explicit(x), fused(x_fused)
    torch.testing.assert_close(out_fused, out)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_fused.backward(grad)
    torch.testing.assert_close(x_fused.grad, x.grad)
    for (name, p), p_fused in zip(explicit.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused.grad, p.grad, msg=name)


@pytest.mark.parametrize("posn", [1, 5, CFG.n_ctx])
def test_fused_attention_equals_explicit_softmax(posn):
    assert_same_function(randomized(Attention(CFG)), FusedAttention(CFG), stream(posn=posn))


def test_fused_transformer_equals_explicit_with_the_same_weights():
    explicit = randomized(Transformer(CFG)).double()
    fast = Transformer(CFG, fused=True).double()
    fast.load_state_dict(explicit.state_dict())
    assert all(isinstance(block.attn, FusedAttention) for block in fast.blocks)
    norms = [m for m in fast.modules() if isinstance(m, LayerNorm)]
    assert len(norms) == 2 * CFG.n_layers + 1
    assert all(isinstance(m, FusedLayerNorm) for m in norms)
    tokens = torch.randint(0, CFG.d_vocab, (2, CFG.n_ctx))
    loss, loss_fast = lm_loss(explicit(tokens), tokens), lm_loss(fast(tokens), tokens)
    torch.testing.assert_close(loss_fast, loss)
    loss.backward()
    loss_fast.backward()
    for (name, p), p_fast in zip(explicit.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p.grad, msg=name)


def test_fused_layer_norm_equals_explicit():
    explicit, fused = randomized(LayerNorm(CFG)), FusedLayerNorm(CFG)
    assert_same_function(explicit, fused, stream(posn=5) * 3 + 1)


def test_fused_attention_still_gives_the_pattern():
    attn = randomized(FusedAttention(CFG))
    pattern = attn.pattern(stream())
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))


# --- The chapter 5 checkers: the block and the model, as a learner assembles them -------


def block_variant(forward):
    return type("TransformerBlock", (TransformerBlock,), {"forward": forward})


def model_variant(forward):
    return type("Transformer", (Transformer,), {"forward": forward})


def test_block_and_model_checkers_accept_the_reference(capsys):
    assert_accepts(checks.check_transformer_block, TransformerBlock, capsys)
    assert_accepts(checks.check_transformer, Transformer, capsys)


def test_block_and_model_checkers_accept_other_correct_code(capsys):
    def block_forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x

    def model_forward(self, tokens):
        residual = self.pos_embed(tokens) + self.embed(tokens)
        residual = functools.reduce(lambda r, block: block(r), self.blocks, residual)
        return self.unembed(self.ln_final(residual))

    assert_accepts(checks.check_transformer_block, block_variant(block_forward), capsys)
    assert_accepts(checks.check_transformer, model_variant(model_forward), capsys)


def _mid(self, x):
    return x + self.attn(self.ln1(x))


BLOCK_MISTAKES = {
    "post-norm": (
        lambda self, x: self.ln2(self.ln1(x + self.attn(x)) + self.mlp(self.ln1(x + self.attn(x)))),
        "post-norm",
    ),
    "no residual around attention": (
        lambda self, x: self.attn(self.ln1(x)) + self.mlp(self.ln2(self.attn(self.ln1(x)))),
        "left out the residual around attention",
    ),
    "no residual around the MLP": (
        lambda self, x: self.mlp(self.ln2(_mid(self, x))),
        "left out the residual around the MLP",
    ),
    "ln1 where ln2 belongs": (
        lambda self, x: _mid(self, x) + self.mlp(self.ln1(_mid(self, x))),
        "used ln1 before the MLP",
    ),
    "ln1 and ln2 swapped": (
        lambda self, x: (
            (x + self.attn(self.ln2(x))) + self.mlp(self.ln1(x + self.attn(self.ln2(x))))
        ),
        "swapped ln1 and ln2",
    ),
    "parallel": (
        lambda self, x: x + self.attn(self.ln1(x)) + self.mlp(self.ln2(x)),
        "in parallel",
    ),
    "MLP before attention": (
        lambda self, x: (
            (x + self.mlp(self.ln2(x))) + self.attn(self.ln1(x + self.mlp(self.ln2(x))))
        ),
        "applied the MLP before attention",
    ),
}


@pytest.mark.parametrize("mistake", BLOCK_MISTAKES)
def test_block_checker_rejects_and_names(mistake):
    forward, message = BLOCK_MISTAKES[mistake]
    assert_rejects(checks.check_transformer_block, block_variant(forward), message)


def _stream(self, tokens):
    return self.embed(tokens) + self.pos_embed(tokens)


def _through(blocks, residual):
    for block in blocks:
        residual = block(residual)
    return residual


MODEL_MISTAKES = {
    "no ln_final": (
        lambda self, t: self.unembed(_through(self.blocks, _stream(self, t))),
        "left out ln_final",
    ),
    "no positional embedding": (
        lambda self, t: self.unembed(self.ln_final(_through(self.blocks, self.embed(t)))),
        "left out the positional embedding",
    ),
    "blocks in reverse order": (
        lambda self, t: self.unembed(self.ln_final(_through(self.blocks[::-1], _stream(self, t)))),
        "reverse order",
    ),
    "only the first block": (
        lambda self, t: self.unembed(self.ln_final(self.blocks[0](_stream(self, t)))),
        "applied only the first block",
    ),
    "each block reads the embeddings": (
        lambda self, t: self.unembed(self.ln_final(self.blocks[-1](_stream(self, t)))),
        "applied only the last block",
    ),
}


@pytest.mark.parametrize("mistake", MODEL_MISTAKES)
def test_model_checker_rejects_and_names(mistake):
    forward, message = MODEL_MISTAKES[mistake]
    assert_rejects(checks.check_transformer, model_variant(forward), message)


def test_model_checker_blames_a_broken_block_first():
    broken = block_variant(lambda self, x: x + self.attn(self.ln1(x)) + self.mlp(self.ln2(x)))

    class Model(Transformer):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.blocks = torch.nn.ModuleList([broken(cfg) for _ in range(cfg.n_layers)])

    assert_rejects(checks.check_transformer, Model, "your TransformerBlock", "pass its check first")


def test_model_checker_names_one_block_repeated():
    class Model(Transformer):
        def __init__(self, cfg):
            super().__init__(cfg)
            # One block listed n_layers times: its weights are shared by every layer.
            self.blocks = torch.nn.ModuleList([TransformerBlock(cfg)] * cfg.n_layers)

    assert_rejects(checks.check_transformer, Model, "one and the same module")


@pytest.mark.parametrize(
    "forward, message",
    [
        (lambda self, x: None, "did you forget `return`"),
        (lambda self, x: self.attn(x)[..., :-1], "has shape"),
        (lambda self, x: 1 / 0, "raised ZeroDivisionError"),
    ],
    ids=["none", "shape", "raises"],
)
def test_block_checker_turns_broken_code_into_a_verdict(forward, message):
    assert_rejects(checks.check_transformer_block, block_variant(forward), message)


def test_block_and_model_checkers_reject_the_stubs():
    def stub(self, x):
        raise NotImplementedError()

    assert_rejects(checks.check_transformer_block, block_variant(stub), "not implemented yet")
    assert_rejects(checks.check_transformer, model_variant(stub), "not implemented yet")
