"""The chapter 4 checkers accept LayerNorm however it is written, and name each usual mistake."""

import copy

import einops
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import layernorm as checks
from solutions.layernorm import (
    LayerNorm,
    RMSNorm,
    fold_layer_norm,
    fold_transformer,
    layer_norm_jacobian,
)
from support import assert_accepts, assert_rejects


def learner_layer_norm(
    *, unbiased=False, eps_outside=False, centre=True, dim=-1, bias=True, swap=False, eps=None,
    root=True,
):  # fmt: skip
    """A LayerNorm written the way a learner might, one mistake switched on."""

    def forward(self, x):
        c = x - x.mean(dim=dim, keepdim=True) if centre else x
        var = (c if centre else x).pow(2).sum(dim=dim, keepdim=True) / (
            x.shape[dim] - (1 if unbiased else 0)
        )
        e = self.cfg.layer_norm_eps if eps is None else eps
        scale = var.sqrt() + e if eps_outside else (var + e).sqrt() if root else var + e
        w, b = (self.b, self.w) if swap else (self.w, self.b)
        return c / scale * w + (b if bias else 0)

    return type("LayerNorm", (LayerNorm,), {"forward": forward})


def variant(cls=LayerNorm, **methods):
    return type(cls.__name__, (cls,), methods)


# --- LayerNorm -------------------------------------------------------------------------


def test_check_layer_norm_accepts_the_reference(capsys):
    assert_accepts(checks.check_layer_norm, LayerNorm, capsys)


def test_check_layer_norm_accepts_a_learner_s_sum_and_divide(capsys):
    assert_accepts(checks.check_layer_norm, learner_layer_norm(), capsys)


def test_check_layer_norm_accepts_f_layer_norm(capsys):
    def forward(self, x):
        return F.layer_norm(x, (self.cfg.d_model,), self.w, self.b, self.cfg.layer_norm_eps)

    assert_accepts(checks.check_layer_norm, variant(forward=forward), capsys)


def test_check_layer_norm_accepts_einsum_and_var_with_correction_0(capsys):
    def forward(self, x):
        centred = x - einops.reduce(x, "batch posn d_model -> batch posn 1", "mean")
        var = torch.var(x, dim=-1, keepdim=True, correction=0)
        return (
            einops.einsum(
                centred / torch.sqrt(var + self.cfg.layer_norm_eps),
                torch.diag(self.w),
                "batch posn d_model, d_model n -> batch posn n",
            )
            + self.b
        )

    assert_accepts(checks.check_layer_norm, variant(forward=forward), capsys)


LAYER_NORM_MISTAKES = {
    "unbiased variance": (dict(unbiased=True), "unbiased variance"),
    "eps outside the square root": (dict(eps_outside=True), "outside the square root"),
    "no mean subtraction": (dict(centre=False), "did not subtract the mean"),
    "normalising over positions": (dict(dim=-2), "normalised over the positions"),
    "normalising over the batch": (dict(dim=0), "normalised over the batch"),
    "forgotten bias": (dict(bias=False), "forgot the bias b"),
    "w and b swapped": (dict(swap=True), "swapped w and b"),
    "eps that ignores the config": (dict(eps=1e-5), "self.cfg.layer_norm_eps"),
    "no eps": (dict(eps=0.0), "self.cfg.layer_norm_eps"),
    "no square root": (dict(root=False), "not by its square root"),
}


@pytest.mark.parametrize("mistake", LAYER_NORM_MISTAKES)
def test_check_layer_norm_rejects_and_names(mistake):
    switches, diagnosis = LAYER_NORM_MISTAKES[mistake]
    assert_rejects(checks.check_layer_norm, learner_layer_norm(**switches), diagnosis)


def test_check_layer_norm_rejects_a_hard_coded_eps_even_written_as_f_layer_norm_s_default():
    def forward(self, x):
        return F.layer_norm(x, (self.cfg.d_model,), self.w, self.b)

    assert_rejects(checks.check_layer_norm, variant(forward=forward), "self.cfg.layer_norm_eps")


def test_check_layer_norm_rejects_the_stub():
    def stub(self, x):
        raise NotImplementedError()

    assert_rejects(checks.check_layer_norm, variant(forward=stub), "not implemented yet")


@pytest.mark.parametrize(
    "forward, message",
    [
        (lambda self, x: None, "did you forget `return`"),
        (lambda self, x: LayerNorm.forward(self, x)[..., :-1], "has shape"),
        (lambda self, x: LayerNorm.forward(self, x).double(), "dtype torch.float64"),
        (lambda self, x: LayerNorm.forward(self, x) * float("nan"), "NaN"),
        (lambda self, x: x @ torch.ones(3, 3), "raised RuntimeError"),
        (lambda self, x: LayerNorm.forward(self, x.sub_(x.mean())), "modified its input"),
    ],
    ids=["none", "shape", "dtype", "nan", "raises", "in-place"],
)
def test_check_layer_norm_turns_broken_code_into_a_verdict(forward, message):
    assert_rejects(checks.check_layer_norm, variant(forward=forward), message)


def test_check_layer_norm_names_a_misnamed_parameter():
    class Renamed(LayerNorm):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.weight = self.w
            del self.w

    assert_rejects(checks.check_layer_norm, Renamed, "Missing: ['w']", "unexpected: ['weight']")


# --- The Jacobian ------------------------------------------------------------------------


def test_check_layer_norm_jacobian_accepts_the_reference_and_autograd(capsys):
    assert_accepts(checks.check_layer_norm_jacobian, layer_norm_jacobian, capsys)

    def through_autograd(ln, x):
        return torch.autograd.functional.jacobian(lambda v: ln(v[None, None])[0, 0], x)

    assert_accepts(checks.check_layer_norm_jacobian, through_autograd, capsys)


def _jacobian(ln, x, *, w_side="rows", ones=True, outer=True, sigma=True, eps=None, x_hat=""):
    d = x.shape[-1]
    s = (x.var(unbiased=False) + (ln.cfg.layer_norm_eps if eps is None else eps)).sqrt()
    x_hat = ln(x[None, None])[0, 0] if x_hat == "ln" else (x - x.mean()) / s
    m = torch.eye(d) - (torch.ones(d, d) / d if ones else 0)
    m = m - (torch.outer(x_hat, x_hat) / d if outer else 0)
    m = m / s if sigma else m
    w = ln.w.detach()
    return {"rows": w[:, None] * m, "columns": m * w, "none": m}[w_side]


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(w_side="columns"), "w on the wrong side"),
        (dict(w_side="none"), "left out w"),
        (dict(outer=False), "x̂x̂ᵀ/d"),
        (dict(ones=False), "11ᵀ/d"),
        (dict(sigma=False), "divide by σ"),
        (dict(eps=0.0), "left eps out of σ"),
        (dict(eps=1e-5), "ln.cfg.layer_norm_eps"),
        (dict(x_hat="ln"), "took x̂ from ln(x)"),
    ],
    ids=["w-columns", "no-w", "no-outer", "no-ones", "no-sigma", "no-eps", "eps-1e-5", "x_hat-ln"],
)
def test_check_layer_norm_jacobian_rejects(switches, message):
    assert_rejects(
        checks.check_layer_norm_jacobian, lambda ln, x: _jacobian(ln, x, **switches), message
    )


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda ln, x: None, "did you forget `return`"),
        (lambda ln, x: layer_norm_jacobian(ln, x)[:-1], "has shape"),
        (lambda ln, x: layer_norm_jacobian(ln, x) * float("nan"), "NaN"),
        (lambda ln, x: x @ torch.ones(3, 3), "raised RuntimeError"),
    ],
    ids=["none", "shape", "nan", "raises"],
)
def test_check_layer_norm_jacobian_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_layer_norm_jacobian, fn, message)


# --- Folding -----------------------------------------------------------------------------


def test_check_fold_layer_norm_accepts_the_reference_and_diag(capsys):
    assert_accepts(checks.check_fold_layer_norm, fold_layer_norm, capsys)
    assert_accepts(
        checks.check_fold_layer_norm,
        lambda ln, W, bias: (torch.diag(ln.w) @ W, einops.einsum(ln.b, W, "m, m n -> n") + bias),
        capsys,
    )


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda ln, W, bias: (W * ln.w, ln.b @ W + bias), "scaled W's columns"),
        (lambda ln, W, bias: (W, ln.b @ W + bias), "left W as it was"),
        (lambda ln, W, bias: (ln.w[:, None] * W, ln.b @ W), "forgot the layer's own bias"),
        (
            lambda ln, W, bias: (ln.w[:, None] * W, ln.b @ (ln.w[:, None] * W) + bias),
            "with the original W",
        ),
        (lambda ln, W, bias: (ln.w[:, None] * W, bias), "left the bias as it was"),
        (lambda ln, W, bias: ln.w[:, None] * W, "return a pair"),
        (lambda ln, W, bias: None, "return a pair"),
        (lambda ln, W, bias: (ln.w[:, None] * W, (ln.b @ W + bias)[None]), "has shape"),
        (lambda ln, W, bias: (W * float("nan"), bias), "NaN"),
        (lambda ln, W, bias: (W @ W, bias), "raised RuntimeError"),
    ],
    ids=[
        "columns",
        "W-unchanged",
        "no-bias",
        "folded-W",
        "bias-unchanged",
        "single",
        "none",
        "shape",
        "nan",
        "raises",
    ],  # fmt: skip
)
def test_check_fold_layer_norm_rejects(fn, message):
    assert_rejects(checks.check_fold_layer_norm, fn, message)


# --- RMSNorm -----------------------------------------------------------------------------


def test_check_rms_norm_accepts_the_reference_and_rsqrt(capsys):
    assert_accepts(checks.check_rms_norm, RMSNorm, capsys)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps) * self.w

    assert_accepts(checks.check_rms_norm, variant(RMSNorm, forward=forward), capsys)


def _rms(*, centre=False, eps_outside=False, eps=None, w=True, root=True):
    def forward(self, x):
        x = x - x.mean(-1, keepdim=True) if centre else x
        ms = x.pow(2).mean(-1, keepdim=True)
        e = self.cfg.layer_norm_eps if eps is None else eps
        scale = ms.sqrt() + e if eps_outside else (ms + e).sqrt() if root else ms + e
        return x / scale * (self.w if w else 1)

    return variant(RMSNorm, forward=forward)


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(centre=True), "RMSNorm does not centre"),
        (dict(eps_outside=True), "outside the square root"),
        (dict(eps=1e-5), "self.cfg.layer_norm_eps"),
        (dict(w=False), "forgot w"),
        (dict(root=False), "not its square root"),
    ],
    ids=["centred", "eps-outside", "eps-ignores-config", "no-w", "no-root"],
)
def test_check_rms_norm_rejects(switches, message):
    assert_rejects(checks.check_rms_norm, _rms(**switches), message)


def test_check_rms_norm_rejects_the_stub_and_nan():
    def stub(self, x):
        raise NotImplementedError()

    assert_rejects(checks.check_rms_norm, variant(RMSNorm, forward=stub), "not implemented yet")
    nan = variant(RMSNorm, forward=lambda self, x: RMSNorm.forward(self, x) * float("nan"))
    assert_rejects(checks.check_rms_norm, nan, "NaN")


# --- The solutions' claims ---------------------------------------------------------------


def test_folded_transformer_computes_what_the_unfolded_one_does():
    from checks._core import randomize
    from solutions.config import TINY
    from solutions.layernorm import fold_transformer
    from solutions.transformer import Transformer

    model = randomize(Transformer(TINY), seed=0, scale=0.3)
    folded = fold_transformer(model)
    tokens = torch.randint(TINY.d_vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(folded(tokens), model(tokens), atol=1e-5)
        for module in folded.modules():
            if isinstance(module, LayerNorm):
                assert torch.equal(module.w, torch.ones_like(module.w))
                assert torch.equal(module.b, torch.zeros_like(module.b))


# --- Gradients: the model trains through both norms ---------------------------------------


def _no_grad(cls):
    def forward(self, x):
        with torch.no_grad():
            return cls.forward(self, x)

    return variant(cls, forward=forward)


def _detached_scale(cls):
    def forward(self, x):
        c = x - x.mean(-1, keepdim=True) if cls is LayerNorm else x
        scale = (c.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt().detach()
        return c / scale * self.w + (self.b if cls is LayerNorm else 0)

    return variant(cls, forward=forward)


def _w_data(cls):
    def forward(self, x):
        c = x - x.mean(-1, keepdim=True) if cls is LayerNorm else x
        scale = (c.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt()
        return c / scale * self.w.data + (self.b if cls is LayerNorm else 0)

    return variant(cls, forward=forward)


@pytest.mark.parametrize(
    "check, cls",
    [(checks.check_layer_norm, LayerNorm), (checks.check_rms_norm, RMSNorm)],
    ids=["LayerNorm", "RMSNorm"],
)
@pytest.mark.parametrize(
    "make, message",
    [
        (_no_grad, "carries no gradient"),
        (_detached_scale, "detached the scale"),
        (_w_data, "no gradient reaches w"),
    ],
    ids=["no_grad", "detached-scale", "w.data"],
)
def test_norm_checkers_reject_a_norm_that_blocks_gradients(check, cls, make, message):
    assert_rejects(check, make(cls), message)


# --- Folding a whole model ----------------------------------------------------------------


def _fold_pair(ln, W, bias, *, fold_b=True, own=True, through=False, centre=None):
    """One reader folded, W of shape [..., d_model, n] (attention's per-head weights too)."""
    W_new = ln.w[:, None] * W
    if centre is not None:
        W_new = W_new - W_new.mean(dim=centre, keepdim=True)
    if not fold_b:
        return W_new, bias
    return W_new, ln.b @ (W_new if through else W) + (bias if own else 0)


def learner_fold(
    *, in_place=False, attn=("Q", "K", "V"), mlp=True, final=True, reset_final=True,
    zero_b=True, writers=False, columns=False, replace=None, **pair,
):  # fmt: skip
    """A fold_transformer written the way a learner might, one mistake switched on."""

    def fold_transformer(model):
        folded = model if in_place else copy.deepcopy(model)
        with torch.no_grad():
            for block in folded.blocks:
                for x in attn:
                    W, b = getattr(block.attn, f"W_{x}"), getattr(block.attn, f"b_{x}")
                    W_new, b_new = _fold_pair(block.ln1, W, b, **pair)
                    W.copy_(W * block.ln1.w if columns else W_new), b.copy_(b_new)
                mlp_readers = [(block.attn.W_O, block.attn.b_O)] if writers else []
                if mlp and not writers:
                    mlp_readers = [(block.mlp.W_in, block.mlp.b_in)]
                for W, b in mlp_readers:
                    if W is block.attn.W_O:  # the writer before ln2, folded into as if it read
                        W.mul_(block.ln2.w), b.mul_(block.ln2.w).add_(block.ln2.b)
                    else:
                        W_new, b_new = _fold_pair(block.ln2, W, b, **pair)
                        W.copy_(W_new), b.copy_(b_new)
            if final:
                unembed = folded.unembed
                W_U, b_U = _fold_pair(folded.ln_final, unembed.W_U, unembed.b_U, **pair)
                unembed.W_U.copy_(W_U), unembed.b_U.copy_(b_U)
            norms = [n for block in folded.blocks for n in (block.ln1, block.ln2)]
            for ln in norms + ([folded.ln_final] if reset_final else []):
                ln.w.fill_(1.0)
                if zero_b:
                    ln.b.zero_()
            if replace is not None:
                for block in folded.blocks:
                    block.ln1 = replace(block.ln1.cfg)
        return folded

    return fold_transformer


class ScaleOnly(nn.Module):
    """A LayerNorm that divides by the root mean square and does not centre."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w


def fold_by_state_dict(model):
    """A fold that builds a fresh model from a folded state dict, folding the 3-d head
    weights directly ([n_heads, d_model, d_head]: w still scales the d_model axis)."""
    state = {name: p.detach().clone() for name, p in model.state_dict().items()}
    norms = [f"blocks.{i}.ln{j}" for i in range(model.cfg.n_layers) for j in (1, 2)]
    reads = {f"blocks.{i}.ln1": [f"blocks.{i}.attn.{{}}_{x}" for x in "QKV"] for i in range(9)}
    reads |= {f"blocks.{i}.ln2": [f"blocks.{i}.mlp.{{}}_in"] for i in range(9)}
    reads["ln_final"] = ["unembed.{}_U"]
    for ln in [*norms, "ln_final"]:
        w, b = state[f"{ln}.w"], state[f"{ln}.b"]
        for reader in reads[ln]:
            W, bias = reader.format("W"), reader.format("b")
            state[bias] = (
                einops.einsum(b, state[W], "d_model, ... d_model n -> ... n") + state[bias]
            )
            state[W] = w[:, None] * state[W]
        state[f"{ln}.w"], state[f"{ln}.b"] = torch.ones_like(w), torch.zeros_like(b)
    folded = type(model)(model.cfg)
    folded.load_state_dict(state)
    return folded


def test_check_fold_transformer_accepts_the_reference_and_other_folds(capsys):
    assert_accepts(checks.check_fold_transformer, fold_transformer, capsys)
    assert_accepts(checks.check_fold_transformer, learner_fold(), capsys)
    assert_accepts(checks.check_fold_transformer, fold_by_state_dict, capsys)


def test_check_fold_transformer_accepts_readers_centred_over_d_model(capsys):
    # x̂ has mean 0 over d_model, so a W centred over that axis (TransformerLens's fold_ln
    # with center_weights) reads it as the uncentred one does.
    assert_accepts(checks.check_fold_transformer, learner_fold(centre=-2), capsys)


def _stub(model):
    raise NotImplementedError()


@pytest.mark.parametrize(
    "fn, message",
    [
        (learner_fold(in_place=True), "changed the model it was given"),
        (learner_fold(fold_b=False), "folded w but not b"),
        (learner_fold(fold_b=False, zero_b=False), "w but left its b in the LayerNorm"),
        (learner_fold(zero_b=False), "left its b in the LayerNorm: set w to 1 and b to 0"),
        (learner_fold(final=False, reset_final=False), "forgot ln_final"),
        (learner_fold(final=False), "without folding it into the unembedding"),
        (learner_fold(reset_final=False), "folded ln_final into W_U but left its w and b"),
        (learner_fold(attn=("Q",)), "did not fold blocks.0.ln1 into W_K and b_K"),
        (learner_fold(mlp=False), "did not fold blocks.0.ln2 into W_in and b_in"),
        (learner_fold(own=False), "forgot the layer's own bias"),
        (learner_fold(through=True), "passed b through the folded W"),
        (learner_fold(writers=True), "changed blocks.0.attn.W_O, which writes into the stream"),
        (learner_fold(columns=True), "one per row of each reader's weight"),
        (learner_fold(centre=-1), "centred blocks.0.attn.W_Q over its output axis"),
        (learner_fold(replace=lambda cfg: nn.Identity()), "replaced blocks.0.ln1 by Identity"),
        (learner_fold(replace=ScaleOnly), "replaced blocks.0.ln1 by ScaleOnly"),
        (copy.deepcopy, "did not fold blocks.0.ln1"),
        (lambda model: model, "returned the model it was given, unfolded"),
        (lambda model: None, "did you forget `return`"),
        (lambda model: fold_transformer(model).state_dict(), "(an nn.Module), not an OrderedDict"),
        (lambda model: fold_transformer(model).double(), "dtype torch.float64"),
        (lambda model: model @ 2, "raised TypeError"),
        (_stub, "not implemented yet"),
    ],
    ids=[
        "in-place", "w-not-b", "b-left", "b-twice", "no-ln_final", "no-unembed", "ln_final-twice",
        "only-W_Q", "no-mlp", "no-own-bias", "b-through-folded-W", "writer", "columns",
        "centred-outputs", "identity", "no-centring", "unfolded-copy", "same-model", "none",
        "state-dict", "double", "raises", "stub",
    ],
)  # fmt: skip
def test_check_fold_transformer_rejects_and_names(fn, message):
    assert_rejects(checks.check_fold_transformer, fn, message)


def test_check_fold_transformer_names_nan_logits():
    def fold_with_nan(model):
        folded = fold_transformer(model)
        with torch.no_grad():
            folded.unembed.b_U[0] = float("nan")
        return folded

    assert_rejects(checks.check_fold_transformer, fold_with_nan, "NaN")
