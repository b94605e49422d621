"""The chapter 1 embedding checkers accept correct code, however it is written, and name mistakes:
here the input side (one_hot, Embed, PosEmbed, the sinusoidal table), and the chapter's figure;
Unembed and the next-token objective are in test_embeddings_unembed.py."""

import math
from pathlib import Path
from xml.etree import ElementTree

import einops
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checks import embeddings as checks
from solutions import embeddings as ref
from solutions.config import TINY
from solutions.embeddings import Embed, PosEmbed, Unembed
from tests.support import assert_accepts, assert_rejects

MODULES = {"embed": Embed, "pos_embed": PosEmbed, "unembed": Unembed}
FUNCTIONS = {
    "one_hot": ref.one_hot,
    "sinusoidal_pos_embed": ref.sinusoidal_pos_embed,
    "next_token_log_probs": ref.next_token_log_probs,
}
ALL = {**FUNCTIONS, **MODULES}


def checker(name):
    return getattr(checks, f"check_{name}")


def forward(base, fn):
    """A learner's module: the reference's constructor with `fn(self, x)` as forward."""
    return type(base.__name__, (base,), {"forward": fn})


def test_every_exercise_has_a_checker():
    assert sorted(checks.__all__) == sorted(f"check_{name}" for name in ALL)


@pytest.mark.parametrize("name", ALL)
def test_check_accepts_the_reference(name, capsys):
    assert_accepts(checker(name), ALL[name], capsys)


def stubbed(name):
    def stub(*args):
        raise NotImplementedError()

    return forward(MODULES[name], stub) if name in MODULES else stub


@pytest.mark.parametrize("name", ALL)
def test_check_rejects_the_stub_as_not_implemented(name):
    assert_rejects(checker(name), stubbed(name), "not implemented")


def wrapped(name, change):
    """The reference with `change` applied to its output."""
    if name in MODULES:
        return forward(MODULES[name], lambda self, x: change(MODULES[name].forward(self, x)))
    return lambda *args: change(FUNCTIONS[name](*args))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda out: None, "returned None"),
        (lambda out: out.double(), "dtype"),
        (lambda out: out * torch.nan, "NaN"),
        (lambda out: out.tolist(), "should be a torch.Tensor"),
        (lambda out: out[:1, ..., None], "has shape"),
    ],
)
@pytest.mark.parametrize("name", ALL)
def test_check_rejects_bad_output(name, change, fragment):
    assert_rejects(checker(name), wrapped(name, change), fragment)


@pytest.mark.parametrize("name", ALL)
def test_check_rejects_code_that_raises_and_shows_the_line(name):
    def broken(*args):
        raise ValueError("oops")

    learner = forward(MODULES[name], broken) if name in MODULES else broken
    assert_rejects(checker(name), learner, "raised ValueError: oops", "line")


def test_check_rejects_a_misnamed_parameter():
    class Renamed(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.W_emb = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_model))

    assert_rejects(checks.check_embed, Renamed, "Missing: ['W_E']", "unexpected: ['W_emb']")


# --- one_hot and Embed ------------------------------------------------------------------


@pytest.mark.parametrize(
    "learner",
    [
        lambda tokens, d_vocab: (tokens[..., None] == torch.arange(d_vocab)).float(),
        lambda tokens, d_vocab: torch.eye(d_vocab)[tokens],
        lambda tokens, d_vocab: torch.zeros(*tokens.shape, d_vocab).scatter_(
            -1, tokens[..., None], 1.0
        ),
    ],
)
def test_check_one_hot_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_one_hot, learner, capsys)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda tokens, d_vocab: F.one_hot(tokens, d_vocab), "(.float())"),
        (lambda tokens, d_vocab: F.one_hot(tokens).float(), "pass num_classes=d_vocab"),
    ],
)
def test_check_one_hot_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_one_hot, learner, fragment)


def test_one_hot_rows_times_W_E_select_rows_of_W_E():
    W_E = torch.randn(TINY.d_vocab, TINY.d_model)
    tokens = torch.randint(0, TINY.d_vocab, (2, 9))
    torch.testing.assert_close(ref.one_hot(tokens, TINY.d_vocab) @ W_E, W_E[tokens])


@pytest.mark.parametrize(
    "fn",
    [
        lambda self, tokens: F.one_hot(tokens, self.cfg.d_vocab).float() @ self.W_E,
        lambda self, tokens: F.embedding(tokens, self.W_E),
        lambda self, tokens: self.W_E.index_select(0, tokens.flatten()).view(*tokens.shape, -1),
        lambda self, tokens: einops.einsum(
            F.one_hot(tokens, self.cfg.d_vocab).float(),
            self.W_E,
            "batch posn d_vocab, d_vocab d_model -> batch posn d_model",
        ),
    ],
)
def test_check_embed_accepts_correct_variants(fn, capsys):
    assert_accepts(checks.check_embed, forward(Embed, fn), capsys)


def test_check_embed_rejects_scaling_by_sqrt_d_model():
    learner = forward(Embed, lambda self, tokens: self.W_E[tokens] * math.sqrt(self.cfg.d_model))
    assert_rejects(checks.check_embed, learner, "scaled by sqrt(d_model)")


@pytest.mark.parametrize(
    "fn",
    [
        lambda self, tokens: F.one_hot(tokens).float() @ self.W_E,
        lambda self, tokens: einops.einsum(
            F.one_hot(tokens).float(),
            self.W_E,
            "batch posn d_vocab, d_vocab d_model -> batch posn d_model",
        ),
    ],
)
def test_check_embed_rejects_one_hot_rows_without_num_classes(fn):
    # Right whenever the batch holds the id d_vocab - 1, wrong on every other batch.
    message = assert_rejects(checks.check_embed, forward(Embed, fn), "ids below 50")
    assert "pass num_classes=self.cfg.d_vocab" in message


def test_check_embed_rejects_modifying_the_tokens():
    def clamp_in_place(self, tokens):
        return self.W_E[tokens.clamp_(1)]

    assert_rejects(checks.check_embed, forward(Embed, clamp_in_place), "modified its input")


# --- PosEmbed ---------------------------------------------------------------------------


def pos_by_arange(self, tokens):
    batch, posn = tokens.shape
    return self.W_pos[torch.arange(posn)].expand(batch, posn, -1)


def asserting(fn):
    """`fn` behind the debug assert that a prompt fits in n_ctx."""

    def forward(self, tokens):
        assert tokens.shape[1] <= self.cfg.n_ctx, "prompt longer than n_ctx"
        return fn(self, tokens)

    return forward


@pytest.mark.parametrize(
    "fn",
    [
        pos_by_arange,  # no assert needed: a too-long prompt raises an IndexError
        asserting(lambda self, tokens: self.W_pos[: tokens.shape[1]].repeat(tokens.shape[0], 1, 1)),
        asserting(
            lambda self, tokens: (
                self.W_pos[: tokens.shape[1]].unsqueeze(0).expand(*tokens.shape, -1)
            )
        ),
        asserting(
            lambda self, tokens: einops.repeat(
                self.W_pos[: tokens.shape[1]],
                "posn d_model -> batch posn d_model",
                batch=len(tokens),
            )
        ),
    ],
)
def test_check_pos_embed_accepts_correct_variants(fn, capsys):
    assert_accepts(checks.check_pos_embed, forward(PosEmbed, fn), capsys)


def off_by_one(self, tokens):
    return self.W_pos[1 : tokens.shape[1] + 1].expand(tokens.shape[0], -1, -1)


@pytest.mark.parametrize(
    "fn, fragment",
    [
        (lambda self, tokens: self.W_pos[tokens], "indexed W_pos by token id"),
        (off_by_one, "started at position 1"),
        (lambda self, tokens: self.W_pos[: tokens.shape[1]], "give every sequence of the batch"),
        (lambda self, tokens: self.W_pos[: tokens.shape[1]][None], "give every sequence"),
        (lambda self, tokens: PosEmbed.forward(self, tokens) * 8**0.5, "times 2.828"),
    ],
)
def test_check_pos_embed_names_the_mistake(fn, fragment):
    assert_rejects(checks.check_pos_embed, forward(PosEmbed, fn), fragment)


def test_check_pos_embed_rejects_silently_truncating_a_too_long_prompt():
    def no_assert(self, tokens):
        return self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)

    assert_rejects(checks.check_pos_embed, forward(PosEmbed, no_assert), "instead of an error")


BARE_ASSERT = """
def forward(self, tokens):
    batch, posn = tokens.shape
    if self.cfg.debug:
        assert posn <= self.cfg.n_ctx
    return self.W_pos[:posn].expand(batch, -1, -1)
"""


def test_check_pos_embed_rejects_an_assert_without_a_message():
    # Compiled here, not in this file: pytest would give the assert a message of its own.
    namespace = {}
    exec(compile(BARE_ASSERT, "learner", "exec"), namespace)
    learner = forward(PosEmbed, namespace["forward"])
    assert_rejects(checks.check_pos_embed, learner, "with no message")


def test_pos_embed_debug_assert_names_the_context_window():
    with pytest.raises(AssertionError, match="n_ctx = 32"):
        PosEmbed(TINY)(torch.zeros(1, 33, dtype=torch.long))


# --- Sinusoidal encodings ---------------------------------------------------------------


def sinusoidal_exp_log(n_ctx, d_model):
    """The float32 formulation of many tutorials, via exp and log."""
    pos = torch.arange(n_ctx).float()[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n_ctx, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


def sinusoidal_loops(n_ctx, d_model):
    pe = torch.zeros(n_ctx, d_model)
    for pos in range(n_ctx):
        for i in range(d_model // 2):
            pe[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / d_model))
            pe[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / d_model))
    return pe


def sinusoidal_einops(n_ctx, d_model):
    angles = torch.arange(n_ctx)[:, None] / 10000 ** (torch.arange(0, d_model, 2) / d_model)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)
    return einops.rearrange(pe, "n half two -> n (half two)")


@pytest.mark.parametrize("learner", [sinusoidal_exp_log, sinusoidal_einops])
def test_check_sinusoidal_pos_embed_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_sinusoidal_pos_embed, learner, capsys)


def test_check_sinusoidal_pos_embed_accepts_plain_loops_on_small_tables():
    # The 1024 x 768 case takes too long in Python loops: compare the small tables only.
    for n_ctx, d_model in [(1, 2), (8, 4), (50, 16)]:
        torch.testing.assert_close(
            sinusoidal_loops(n_ctx, d_model), ref.sinusoidal_pos_embed(n_ctx, d_model)
        )


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"swap": True}, "swapped sin and cos"),
        ({"halves": True}, "all the sines first"),
        ({"exponent": 4}, "used the column index as 2i"),
        ({"start": 1}, "counted positions from 1"),
        ({"base": 1000.0}, "used base 1000"),
        ({"base": 500.0}, "Columns 0 and 1 (frequency 1) are right"),
    ],
)
def test_check_sinusoidal_pos_embed_names_the_mistake(changes, fragment):
    learner = lambda n_ctx, d_model: checks._sinusoidal(n_ctx, d_model, **changes)  # noqa: E731
    assert_rejects(checks.check_sinusoidal_pos_embed, learner, fragment)


def test_sinusoidal_dot_products_depend_only_on_the_offset():
    pe = ref.sinusoidal_pos_embed(64, 32).double()
    gram = pe @ pe.T
    for offset in range(5):
        band = torch.diagonal(gram, offset)
        torch.testing.assert_close(band, band[:1].expand_as(band), rtol=0, atol=1e-5)


def test_the_model_figure_is_well_formed_svg_with_transformerlens_names():
    root = Path(__file__).resolve().parent.parent
    svg = ElementTree.parse(root / "book" / "figures" / "gpt2.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and svg.get("viewBox")
    texts = {"".join(t.itertext()).strip() for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    names = ["embed", "pos_embed", "ln1", "attn", "ln2", "mlp", "ln_final", "unembed"]
    hooks = ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "hook_attn_out"]
    hooks += ["hook_resid_mid", "hook_mlp_out", "blocks.0.hook_resid_post"]
    assert not [name for name in names + hooks if name not in texts]
    assert "figures/gpt2.svg" in (root / "book" / "01_embeddings.md").read_text()
