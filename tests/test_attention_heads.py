"""Heads built by hand: the previous-token checkers, the induction circuit, the explorer."""

import math

import pytest
import torch
import torch.nn.functional as F

from checks import attention as checks
from course.display.explorer import attention_explorer, pattern_figure, streams_into
from solutions import attention as ref
from support import assert_accepts, assert_rejects

CAT = "<bos> the cat sat on the mat and the cat slept".split()

# --- previous_token_pattern ----------------------------------------------------------------


def pattern_by_loop(n_posn):
    pattern = torch.zeros(n_posn, n_posn)
    for i in range(n_posn):
        pattern[i, max(i - 1, 0)] = 1.0
    return pattern


def pattern_by_shifted_eye(n_posn):
    pattern = torch.eye(n_posn).roll(-1, dims=1)
    pattern[0] = F.one_hot(torch.tensor(0), n_posn)
    return pattern


@pytest.mark.parametrize(
    "fn", [ref.previous_token_pattern, pattern_by_loop, pattern_by_shifted_eye]
)
def test_check_previous_token_pattern_accepts(fn, capsys):
    assert_accepts(checks.check_previous_token_pattern, fn, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda n: torch.diag(torch.ones(n - 1), -1), "query 0's row empty"),
        (lambda n: torch.eye(n).roll(-1, dims=1), "wrap around"),
        (lambda n: torch.eye(n), "the current token"),
        (lambda n: torch.diag(torch.ones(n - 1), 1), "the next token"),
        (lambda n: F.one_hot((torch.arange(n) - 2).clamp(min=0), n).float(), "off by one"),
        (lambda n: F.one_hot((torch.arange(n) - 1).clamp(min=0), n), "dtype"),
        (lambda n: torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None], "wrong values"),
    ],
    ids=["row-0-empty", "roll-wraps", "current", "next", "two-back", "integers", "uniform"],
)
def test_check_previous_token_pattern_rejects(fn, message):
    assert_rejects(checks.check_previous_token_pattern, fn, message)


def test_check_previous_token_pattern_rejects_the_stub():
    def stub(n_posn):
        raise NotImplementedError()

    assert_rejects(checks.check_previous_token_pattern, stub, "not implemented yet")


# --- previous_token_qk ---------------------------------------------------------------------


def rotations(angle_factor=1.0, scale=4.0, transpose=False, pairs=8):
    """Block-diagonal 2×2 rotations by -angle_factor·ω_k over the first `pairs` pairs."""
    blocks = []
    for w in ref.toy_frequencies()[:pairs].tolist():
        c, s = math.cos(angle_factor * w), math.sin(angle_factor * w)
        block = torch.tensor([[c, s], [-s, c]])
        blocks.append(block.T if transpose else block)
    W = torch.zeros(ref.HANDMADE.d_model, ref.HANDMADE.d_head)
    W[: 2 * pairs, : 2 * pairs] = scale * torch.block_diag(*blocks)[:, : 2 * pairs]
    return W


def identity(scale=4.0):
    W = torch.zeros(ref.HANDMADE.d_model, ref.HANDMADE.d_head)
    W[ref.FAST] = scale * torch.eye(16)
    return W


ACCEPTED = {
    "reference": ref.previous_token_qk,
    "keys rotated forward instead": lambda cfg: (identity(), rotations(transpose=True)),
    "a larger scale": lambda cfg: (rotations(scale=6.0), identity(scale=6.0)),
    "scale on one side only": lambda cfg: (rotations(scale=16.0), identity(scale=1.0)),
    "a list": lambda cfg: [rotations(), identity()],
}


@pytest.mark.parametrize("variant", ACCEPTED)
def test_check_previous_token_qk_accepts(variant, capsys):
    assert_accepts(checks.check_previous_token_qk, ACCEPTED[variant], capsys)


REJECTED = {
    "identity on both sides": (lambda cfg: (identity(), identity()), "the current token"),
    "queries rotated forward": (
        lambda cfg: (rotations(transpose=True), identity()),
        "the current token",
    ),
    "keys rotated back instead of queries": (
        lambda cfg: (identity(), rotations()),
        "rotated the keys back",
    ),
    "rotated by two steps": (lambda cfg: (rotations(angle_factor=2.0), identity()), "off by one"),
    "no scale": (lambda cfg: (rotations(scale=1.0), identity(scale=1.0)), "weakly"),
    "a single matrix": (lambda cfg: rotations(), "pair (W_Q, W_K)"),
    "transposed shapes": (lambda cfg: (rotations().T, identity().T), "shape (64, 16)"),
    "all zeros": (
        lambda cfg: (identity() * 0, torch.eye(64, 16) * 0),
        "does not look at the previous token",
    ),
}


@pytest.mark.parametrize("mistake", REJECTED)
def test_check_previous_token_qk_rejects(mistake):
    fn, message = REJECTED[mistake]
    assert_rejects(checks.check_previous_token_qk, fn, message)


def test_check_previous_token_qk_rejects_the_stub():
    def stub(cfg):
        raise NotImplementedError()

    assert_rejects(checks.check_previous_token_qk, stub, "not implemented yet")


# --- The handmade heads and the induction circuit ------------------------------------------


def test_handmade_heads_have_their_archetypal_patterns():
    pattern = ref.handmade_attention().pattern(ref.toy_stream(CAT)[None])[0].detach()
    n = len(CAT)
    assert (pattern[0].diagonal(-1) > 0.9).all()  # previous token
    band = pattern[1].argmax(-1)
    assert ((torch.arange(n) - band).abs() <= 1).all()  # the heaviest key is itself or a neighbour
    assert (pattern[2][:, 0] > 0.9).all()  # first token
    assert pattern[3][8, [1, 5, 8]].sum() > 0.9  # "the" at 8 looks at every "the"


def test_previous_token_head_writes_the_previous_word_and_only_there():
    stream = ref.toy_stream(CAT)[None]
    out = ref.handmade_attention()(stream)[0].detach()
    assert out[:, : ref.PREV_WORD.start].abs().max() == 0
    codes = torch.stack([ref.word_code(w) for w in CAT])
    cosine = F.cosine_similarity(out[1:, ref.PREV_WORD], codes[:-1], dim=-1)
    assert cosine.min() > 0.95


@pytest.mark.parametrize("period", [3, 5, 9])
def test_induction_head_finds_the_token_after_the_earlier_copy(period):
    gen = torch.Generator().manual_seed(period)
    vocab = [f"w{i}" for i in range(40)]
    words = ["<bos>"] + [vocab[i] for i in torch.randperm(40, generator=gen)[:period]] * 3
    layer_0, layer_1 = ref.handmade_attention(), ref.induction_attention()
    into = streams_into([layer_0, layer_1], ref.toy_stream(words)[None])
    pattern = layer_1.pattern(into[1])[0, 0].detach()
    later = torch.arange(period + 1, len(words))
    # Every earlier copy of the current word is followed by the same token: all that weight
    # lands on keys one short of a whole number of periods back.
    on_copies = sum(
        pattern[later, later - m * period + 1] * (later - m * period + 1 >= 1) for m in range(1, 3)
    )
    assert on_copies.min() > 0.9
    # What it writes, read through the word codes, is the next token.
    out = layer_1(into[1])[0, later[:-1], ref.WORD].detach()
    codes = torch.stack([ref.word_code(w) for w in vocab])
    predicted = [vocab[i] for i in (out @ codes.T).argmax(-1)]
    assert predicted == words[period + 2 :]


def test_induction_head_rests_on_the_start_when_nothing_repeats():
    layers = [ref.handmade_attention(), ref.induction_attention()]
    into = streams_into(layers, ref.toy_stream(CAT[:4])[None])
    pattern = layers[1].pattern(into[1])[0, 0].detach()
    assert (pattern[:, :2].sum(-1) > 0.9).all()


# --- The explorer ----------------------------------------------------------------------------


def test_explorer_builds_headless_and_lists_each_layers_named_heads(capsys):
    layers = [ref.handmade_attention(), ref.induction_attention()]
    explorer = attention_explorer(
        layers, [ref.HANDMADE_HEADS, ["induction"]], {"cat": " ".join(CAT)}, ref.toy_stream
    )
    layer, head, prompt = explorer.children[:3]
    assert [label for label, _ in head.options][0] == "0: previous token"
    layer.value = 1
    assert head.options == (("0: induction", 0),)
    assert prompt.options == ("cat",)


def test_pattern_figure_labels_queries_and_keys():
    fig = pattern_figure(torch.eye(3), ["a", "b", "c"], title="t")
    assert list(fig.layout.xaxis.ticktext) == ["a", "b", "c"]
    assert fig.layout.yaxis.title.text == "query" and fig.data[0].zmax == 1


def test_timings_and_widgets_stay_out_of_the_stored_notebooks():
    # Their outputs differ at every run: stored notebooks skip them, learners run them live.
    from course.notebooks import SOURCES, parse

    _, blocks = parse((SOURCES / "02_attention.md").read_text(encoding="utf-8"))
    live = [b for b in blocks if "perf_counter" in b.text or "attention_explorer(" in b.text]
    assert len(live) == 2
    assert all("skip-execution" in b.tags for b in live)
