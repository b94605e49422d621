"""The circuits checkers accept correct variants and name the usual mistakes; the shipped
models and logs are what `python -m course.models.train_circuits` writes."""

import dataclasses

import einops
import pytest
import torch

from checks import circuits as checks
from checks.circuits import paths as checks_paths
from course.models import circuits as models
from course.models import train_circuits
from solutions.attention import w_ov, w_qk
from solutions.circuits import (
    AttnOnlyTransformer,
    attention_pattern_score,
    attention_patterns,
    composed_qk_circuit,
    composition_scores,
    direct_path,
    induction_score,
    ov_circuit,
    ov_copying_score,
    path_expansion_logits,
    prev_token_score,
    qk_circuit,
    skip_trigrams,
)
from solutions.residual import decompose_resid, logit_lens, run_with_cache
from solutions.training import TrainConfig
from support import assert_accepts, assert_rejects

# --- Skip-trigrams ------------------------------------------------------------------------


def _loop_trigrams(model, head, k, among=None):
    """Source by source, in plain Python: a correct alternative to the reference."""
    ids = list(range(model.cfg.d_vocab)) if among is None else list(among)
    qk, ov = qk_circuit(model)[head], ov_circuit(model)[head]
    qk, ov = qk - qk.mean(-1, keepdim=True), ov - ov.mean(-1, keepdim=True)
    found = []
    for s in ids:
        score, q = max((qk[q, s].item(), q) for q in ids if q != s)
        gain, o = max((ov[s, o].item(), o) for o in ids)
        found.append((s, q, o, score + gain))
    return sorted(found, key=lambda t: -t[3])[:k]


def test_check_skip_trigrams_accepts_the_reference_and_a_loop(capsys):
    assert_accepts(checks.check_skip_trigrams, skip_trigrams, capsys)
    assert_accepts(checks.check_skip_trigrams, _loop_trigrams, capsys)


def _slipped(**switches):
    """The slip's triples, with the reference's scores (the slips are told apart by triples)."""

    def slipped(m, head, k, among=None):
        triples = checks_paths._trigrams(m, head, k, among, **switches)
        scores = [t[3] for t in skip_trigrams(m, head, k, among)]
        return [(*t, score) for t, score in zip(triples, scores, strict=True)]

    return slipped


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(self_query=True), "leave q = s out"),
        (dict(centre=False), "did not centre"),
        (dict(qk_axis=-1), "best key"),
        (dict(swap=True), "swapped the circuits"),
        (dict(ids_out=False), "not token ids"),
    ],
    ids=["self-query", "uncentred", "qk-axis", "swapped", "positions"],
)
def test_check_skip_trigrams_rejects(switches, message):
    assert_rejects(checks.check_skip_trigrams, _slipped(**switches), message)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda m, head, k, among=None: None, "list of k"),
        (lambda m, head, k, among=None: [(1, 2, 3)] * k, "tuple (source, query, output, score)"),
        (lambda m, head, k, among=None: skip_trigrams(m, head, k, among)[:-1], "list of k"),
        (lambda m, head, k, among=None: 1 / 0, "raised ZeroDivisionError"),
        (
            lambda m, head, k, among=None: [
                (*t[:3], 2 * t[3]) for t in skip_trigrams(m, head, k, among)
            ],
            "scores",
        ),
    ],
    ids=["none", "triples", "short", "raises", "scores"],
)
def test_check_skip_trigrams_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_skip_trigrams, fn, message)


def test_skip_trigrams_never_take_the_source_as_query():
    model = checks_paths._trigram_model(checks.SQUARE, seed=3)
    with torch.no_grad():
        found = skip_trigrams(model, head=0, k=checks.SQUARE.d_vocab)
    assert all(s != q for s, q, _, _ in found)
    with torch.no_grad():
        with_self = checks_paths._trigrams(model, 0, checks.SQUARE.d_vocab, None, self_query=True)
    assert any(s == q for s, q, _ in with_self)  # the case the rule is there for


# --- Path expansion ----------------------------------------------------------------------


def test_check_path_expansion_accepts_the_reference_and_heads_through_their_values(capsys):
    assert_accepts(checks.check_path_expansion_logits, path_expansion_logits, capsys)

    def through_values(model, tokens):
        # Each head's pattern times its values (biases in), through W_O and W_U; no matrices
        # over the vocabulary at all.
        attn = model.blocks[0].attn
        x = model.embed(tokens) + model.pos_embed(tokens)
        pattern = attn.pattern(x)
        v = torch.einsum("bpd,hde->bhpe", x, attn.W_V) + attn.b_V[None, :, None]
        z = pattern @ v
        out = torch.einsum("bhpe,hem->bpm", z, attn.W_O) + attn.b_O
        return (x + out) @ model.unembed.W_U + model.unembed.b_U

    assert_accepts(checks.check_path_expansion_logits, through_values, capsys)


def _paths(model, tokens, **switches):
    mistakes = checks._path_mistakes(model, tokens)
    key = next(k for k in mistakes if switches["fragment"] in k)
    return mistakes[key]


@pytest.mark.parametrize(
    "fragment, message",
    [
        ("positional paths", "left out the positional paths"),
        ("positional direct", "positional direct path"),
        ("positions in what", "positions in what the heads read"),
        ("b_U", "b_U"),
        ("b_O W_U", "b_O"),
        ("value bias", "b_V"),
        ("every bias", "every bias"),
        ("transposed", "transposed"),
        ("head 0", "only head 0"),
        ("same weight", "same weight"),
    ],
)
def test_check_path_expansion_rejects(fragment, message):
    def learner(model, tokens):
        with torch.no_grad():
            return _paths(model, tokens, fragment=fragment)

    assert_rejects(checks.check_path_expansion_logits, learner, message)


def test_check_path_expansion_refuses_running_the_model():
    assert_rejects(
        checks.check_path_expansion_logits,
        lambda model, tokens: model(tokens),
        "compute the logits from the paths",
    )
    assert_rejects(
        checks.check_path_expansion_logits,
        lambda model, tokens: model.unembed(model.blocks[0](model.embed(tokens))),
        "do not run the model",
    )


def test_check_path_expansion_turns_broken_code_into_a_verdict():
    assert_rejects(checks.check_path_expansion_logits, lambda m, t: None, "forget `return`")
    assert_rejects(
        checks.check_path_expansion_logits,
        lambda m, t: path_expansion_logits(m, t)[:, :-1],
        "have shape",
    )
    direct_only = lambda m, t: direct_path(m)[t]  # noqa: E731
    assert_rejects(checks.check_path_expansion_logits, direct_only, "wrong values")


# --- Induction and previous-token scores -------------------------------------------------


def test_check_induction_score_accepts_the_reference_and_a_loop(capsys):
    assert_accepts(checks.check_induction_score, induction_score, capsys)

    def loop(pattern, half):
        queries = range(half + 1, 2 * half + 1)
        weights = [pattern[:, :, q, q - half + 1] for q in queries]
        return torch.stack(weights, dim=-1).mean(dim=(0, -1))

    assert_accepts(checks.check_induction_score, loop, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda p, half: checks._diagonal_mean(p, -half, half), "earlier copy of the query's own"),
        (lambda p, half: checks._diagonal_mean(p, -half - 1, half - 1), "query - half + 1"),
        (lambda p, half: checks._diagonal_mean(p, -(half - 1)), "first copy's too"),
        (lambda p, half: p.diagonal(-(half - 1), -2, -1)[..., -half:].mean(-1), "batch axis"),
        (lambda p, half: None, "forget `return`"),
        (lambda p, half: p @ torch.ones(3), "raised RuntimeError"),
    ],
    ids=["same-token", "one-short", "all-queries", "batch", "none", "raises"],
)
def test_check_induction_score_rejects(fn, message):
    assert_rejects(checks.check_induction_score, fn, message)


def test_check_attention_pattern_score_accepts_the_reference_a_loop_and_a_mask(capsys):
    assert_accepts(checks.check_attention_pattern_score, attention_pattern_score, capsys)

    def loop(pattern, offset):
        n = pattern.shape[-1]
        weights = [pattern[:, :, q, q - offset] for q in range(offset, n)]
        return torch.stack(weights, -1).mean((0, -1))

    def masked(pattern, offset):
        posn = pattern.shape[-1]
        query, key = torch.arange(posn)[:, None], torch.arange(posn)
        on = key == query - offset
        return (pattern * on).sum((-2, -1)).mean(0) / on.sum()

    assert_accepts(checks.check_attention_pattern_score, loop, capsys)
    assert_accepts(checks.check_attention_pattern_score, masked, capsys)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda p, o: p.diagonal(o, -2, -1).mean((0, -1)), "above the main one"),
        (
            lambda p, o: p.diagonal(-o, -2, -1).sum((0, -1)) / (p.shape[0] * p.shape[-1]),
            "posn - offset",
        ),
        (lambda p, o: checks._diagonal_mean(p, -(o + 1)), "further back"),
        (lambda p, o: checks._diagonal_mean(p, -1), "ignored `offset`"),
        (lambda p, o: checks._diagonal_mean(p, -(o - 1)) if o else 0 * p[0, :, 0, 0], "nearer"),
        (lambda p, o: p.diagonal(-o, -2, -1).mean(-1), "batch axis"),
        (lambda p, o: p.diagonal(-o, -2, -1).mean(), "have shape ()"),
        (lambda p, o: attention_pattern_score(p, o) * float("nan"), "NaN"),
        (lambda p, o: None, "did you forget `return`"),
    ],
    ids=[
        "above",
        "divide-by-posn",
        "further",
        "fixed-offset",
        "nearer",
        "batch",
        "scalar",
        "nan",
        "none",
    ],
)
def test_check_attention_pattern_score_rejects(fn, message):
    assert_rejects(checks.check_attention_pattern_score, fn, message)


def test_prev_token_score_is_the_score_one_position_back():
    pattern = checks._patterns(2, 3, 6, seed=1)
    torch.testing.assert_close(prev_token_score(pattern), attention_pattern_score(pattern, 1))


# --- Composition -------------------------------------------------------------------------


def test_check_composition_scores_accepts_the_reference_and_matrix_norms(capsys):
    assert_accepts(checks.check_composition_scores, composition_scores, capsys)

    def with_matrix_norms(model, kind):
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        scores = torch.empty(a0.cfg.n_heads, a1.cfg.n_heads)
        norm = torch.linalg.matrix_norm
        for h0 in range(a0.cfg.n_heads):
            for h1 in range(a1.cfg.n_heads):
                ov = a0.W_V[h0] @ a0.W_O[h0]
                qk = a1.W_Q[h1] @ a1.W_K[h1].T
                # K: the score of a key written by head h0 is q W_QK (y W_OV)ᵀ = q (W_QK W_OVᵀ) yᵀ.
                reader = {"Q": ov @ qk, "K": qk @ ov.T, "V": ov @ (a1.W_V[h1] @ a1.W_O[h1])}
                right = {"Q": qk, "K": ov, "V": a1.W_V[h1] @ a1.W_O[h1]}[kind]
                left = {"Q": ov, "K": qk, "V": ov}[kind]
                scores[h0, h1] = norm(reader[kind]) / (norm(left) * norm(right))
        return scores

    assert_accepts(checks.check_composition_scores, with_matrix_norms, capsys)


def _composition(model, kind, *, as_kind=None, swap=False, paper=False, no_norm=False):
    ov_0 = w_ov(model.blocks[0].attn)[:, None]
    qk_1, ov_1 = w_qk(model.blocks[1].attn)[None], w_ov(model.blocks[1].attn)[None]
    reader = {"Q": qk_1, "K": qk_1.transpose(-1, -2), "V": ov_1}[as_kind or kind]
    product = reader @ ov_0 if paper else ov_0 @ reader
    norm = torch.linalg.matrix_norm
    scores = norm(product) if no_norm else norm(product) / (norm(ov_0) * norm(reader))
    return scores.T if swap else scores


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(as_kind="Q"), "computed Q-composition"),
        (dict(swap=True), "swapped the layers"),
        (dict(paper=True), "column-vector convention"),
        (dict(no_norm=True), "forgot to divide by the norms"),
    ],
    ids=["q-for-k", "swapped", "paper-order", "no-norm"],
)
def test_check_composition_scores_rejects(switches, message):
    assert_rejects(
        checks.check_composition_scores, lambda m, k: _composition(m, k, **switches), message
    )


def test_check_composition_scores_rejects_ignoring_the_kind():
    assert_rejects(
        checks.check_composition_scores, lambda m, k: composition_scores(m, "K"), "composition"
    )


# --- The solutions' claims ---------------------------------------------------------------


def test_path_expansion_equals_the_shipped_model_s_logits():
    model = models.load_model("corpus")
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(model.cfg.d_vocab, (2, model.cfg.n_ctx), generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(
            path_expansion_logits(model, tokens), model(tokens), atol=1e-4, rtol=1e-4
        )


def test_the_attn_only_cache_serves_part_one_s_tools():
    model = models.load_model("induction")
    tokens = models.induction_eval_tokens()[:4]
    with torch.no_grad():
        logits, cache = run_with_cache(model, tokens)
        torch.testing.assert_close(logits, model(tokens))
        torch.testing.assert_close(
            cache["blocks.1.attn.hook_pattern"], attention_patterns(model, tokens)[1]
        )
        parts, labels = decompose_resid(cache, model)
        assert labels[:3] == ["embed", "pos_embed", "L0H0"] and labels[-1] == "L1 b_O"
        torch.testing.assert_close(model.unembed(parts.sum(0)), logits, atol=1e-4, rtol=1e-4)
        lens = logit_lens(cache, model)
        assert lens.shape[0] == 3
        torch.testing.assert_close(lens[-1], logits)


def test_attn_only_transformer_has_the_course_s_module_names():
    names = {name for name, _ in AttnOnlyTransformer(checks.SQUARE).named_modules()}
    assert {"embed", "pos_embed", "blocks.0.ln1", "blocks.1.attn", "ln_final", "unembed"} <= names
    assert not any("mlp" in name or "ln2" in name for name in names)


def test_skip_trigrams_stay_among_the_tokens_asked_for():
    model = AttnOnlyTransformer(checks.SQUARE.but(n_layers=1))
    among = [1, 4, 5, 9]
    with torch.no_grad():
        found = skip_trigrams(model, head=2, k=3, among=among)
    assert len(found) == 3 and all(t in among for trigram in found for t in trigram[:3])


# --- The shipped files are what the command writes ---------------------------------------

TRAINERS = {
    "corpus": train_circuits.train_corpus_model,
    "induction": train_circuits.train_induction_model,
}


@pytest.mark.parametrize("name", TRAINERS)
def test_shipped_log_starts_as_a_fresh_run_does(name):
    logged = models.load_json(f"{name}_log")
    shipped_config = logged["train_config"] | {"betas": tuple(logged["train_config"]["betas"])}
    tcfg = TrainConfig(**shipped_config)
    assert tcfg == getattr(train_circuits, f"{name.upper()}_TRAINING")
    # Within the warm-up the schedule does not depend on max_steps: a short run is the start
    # of the long one.
    steps = 20
    assert tcfg.warmup_steps >= steps
    _, log = TRAINERS[name](dataclasses.replace(tcfg, max_steps=steps), progress=False)
    fresh = torch.tensor([row["train_loss"] for row in log[:steps]])
    shipped = torch.tensor([row["train_loss"] for row in logged["log"][:steps]])
    torch.testing.assert_close(fresh, shipped, rtol=1e-4, atol=1e-5)


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)]


def test_shipped_scores_are_those_of_the_shipped_weights():
    fresh = models.scores(models.load_model("corpus"), models.load_model("induction"))
    shipped = models.load_json("scores")
    assert fresh.keys() == shipped.keys()
    torch.testing.assert_close(
        torch.tensor(_numbers(fresh)), torch.tensor(_numbers(shipped)), rtol=1e-4, atol=1e-6
    )


def test_the_shipped_models_learned_what_the_chapter_says():
    scores = models.load_json("scores")
    induction = scores["induction"]
    assert induction["second_half_loss"] < 0.5 < 4 < induction["first_half_loss"]
    assert max(induction["prev_token_score"]) > 0.8 and max(induction["induction_score"]) > 0.8
    k = torch.tensor(scores["composition"]["K"])
    assert k.max() > 1.5 * scores["composition_baseline"]["K"]


def test_shipped_files_are_small():
    total = sum(p.stat().st_size for p in models.OUT.iterdir())
    assert total < 500_000, total


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda m, kind: None, "did you forget `return`"),
        (lambda m, kind: 0.5, "should be a torch.Tensor"),
        (lambda m, kind: composition_scores(m, kind)[0], "have shape"),
        (lambda m, kind: composition_scores(m, kind) * float("nan"), "NaN"),
        (lambda m, kind: {"K": 1}[kind] + torch.zeros(1), "have shape"),
        (lambda m, kind: m.blocks[2], "raised IndexError"),
    ],
    ids=["none", "float", "row", "nan", "one-element", "raises"],
)
def test_check_composition_scores_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_composition_scores, fn, message)


def test_check_path_expansion_rejects_a_pattern_of_the_token_embeddings_alone():
    def path_expansion_logits(model, tokens):
        attn, W_U = model.blocks[0].attn, model.unembed.W_U
        W_pos = model.pos_embed.W_pos[: tokens.shape[1]]
        pattern = attn.pattern(model.embed(tokens))  # the positions left out of what it reads
        direct = model.embed.W_E[tokens] @ W_U + W_pos @ W_U
        stream = model.embed.W_E[tokens] + W_pos
        values = einops.einsum(
            stream, w_ov(attn), "batch posn d_model, n_heads d_model m -> batch n_heads posn m"
        )
        heads = einops.einsum(pattern, values, "batch n_heads q k, batch n_heads k m -> batch q m")
        b_V = einops.einsum(attn.b_V, attn.W_O, "n_heads d_head, n_heads d_head m -> m")
        return direct + heads @ W_U + model.unembed.b_U + (attn.b_O + b_V) @ W_U

    assert_rejects(
        checks.check_path_expansion_logits,
        path_expansion_logits,
        "computed the pattern from the token embeddings alone",
    )


# --- OV copying scores -------------------------------------------------------------------


def _copying(model, layer=0, among=None, *, transpose=False, axis=-1, out="W_U", rows_only=False,
             ignore_among=False, ids_as_targets=False, qk=False, count=False):  # fmt: skip
    ids = torch.arange(model.cfg.d_vocab) if among is None or ignore_among else torch.tensor(among)
    attn = model.blocks[layer].attn
    middle = w_qk(attn) if qk else w_ov(attn)
    middle = middle.transpose(-1, -2) if transpose else middle
    W_U = model.embed.W_E.T if out == "W_E" else model.unembed.W_U
    full = model.embed.W_E[ids] @ middle @ (W_U if rows_only else W_U[:, ids])
    targets = ids if rows_only or ids_as_targets else torch.arange(len(ids))
    hits = (full.argmax(dim=axis) == targets).float()
    return hits.sum(-1) if count else hits.mean(-1)


def test_check_ov_copying_score_accepts_the_reference_and_other_ways(capsys):
    assert_accepts(checks.check_ov_copying_score, ov_copying_score, capsys)

    def from_ov_circuit(model, layer=0, among=None):
        ids = list(range(model.cfg.d_vocab)) if among is None else among
        ov = ov_circuit(model, layer)[:, ids][:, :, ids]
        return (ov.diagonal(dim1=-2, dim2=-1) == ov.max(dim=-1).values).float().mean(-1)

    def head_by_head(model, layer=0, among=None):
        ids = range(model.cfg.d_vocab) if among is None else among
        attn, scores = model.blocks[layer].attn, []
        for h in range(model.cfg.n_heads):
            W_OV = attn.W_V[h] @ attn.W_O[h]
            rows = [model.embed.W_E[s] @ W_OV @ model.unembed.W_U[:, list(ids)] for s in ids]
            scores.append(sum(int(row.argmax()) == k for k, row in enumerate(rows)) / len(rows))
        return torch.tensor(scores)

    assert_accepts(checks.check_ov_copying_score, from_ov_circuit, capsys)
    assert_accepts(checks.check_ov_copying_score, head_by_head, capsys)


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(transpose=True), "transposed W_OV"),
        (dict(axis=-2), "wrong axis"),
        (dict(out="W_E"), "come from W_U"),
        (dict(qk=True), "W_V W_O"),
        (dict(count=True), "fraction"),
        (dict(rows_only=True), "every output token"),
        (dict(ignore_among=True), "ignored `among`"),
        (dict(ids_as_targets=True), "compared the argmax with the token ids"),
    ],
    ids=["W_OV-transposed", "axis", "W_E-out", "qk", "count", "rows-only", "no-among", "ids"],
)
def test_check_ov_copying_score_rejects(switches, message):
    assert_rejects(
        checks.check_ov_copying_score,
        lambda m, layer=0, among=None: _copying(m, layer, among, **switches),
        message,
    )


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda m, layer=0, among=None: None, "did you forget `return`"),
        (lambda m, layer=0, among=None: ov_copying_score(m, layer, among).mean(), "over the heads"),
        (lambda m, layer=0, among=None: ov_copying_score(m, 1 - layer, among), "other layer"),
        (lambda m, layer=0, among=None: ov_copying_score(m, layer, among) + torch.nan, "NaN"),
        (lambda m, layer=0, among=None: m.blocks[0].attn.W_OV, "raised AttributeError"),
        (
            lambda m, layer=0, among=None: (
                (w_ov(m.blocks[layer].attn) @ m.unembed.W_U)
                .argmax(-1)
                .eq(torch.arange(m.cfg.d_vocab))
                .float()
                .mean(-1)
            ),
            "raised RuntimeError",
        ),
        (lambda m, layer=0, among=None: ov_copying_score(m, layer, among).double(), "dtype"),
        (lambda m, layer=0, among=None: [0.5] * m.cfg.n_heads, "should be a torch.Tensor"),
    ],
    ids=["none", "mean", "other-layer", "nan", "raises", "no-W_E", "dtype", "list"],
)
def test_check_ov_copying_score_turns_broken_code_into_a_verdict(fn, message):
    assert_rejects(checks.check_ov_copying_score, fn, message)


def test_the_random_token_induction_heads_copy_every_token():
    model = models.load_model("induction")
    with torch.no_grad():
        copying = ov_copying_score(model, layer=1, among=list(range(1, model.cfg.d_vocab)))
    assert copying.min() == 1.0, copying


def test_composed_qk_circuit_scores_a_key_by_what_the_previous_token_head_wrote():
    model = checks.random_model(checks.SQUARE, seed=5)
    attn_0, attn_1 = model.blocks[0].attn, model.blocks[1].attn
    q_token, k_token, h0, h1 = 3, 7, 2, 1
    with torch.no_grad():
        written = model.embed.W_E[k_token] @ attn_0.W_V[h0] @ attn_0.W_O[h0]
        query = model.embed.W_E[q_token] @ attn_1.W_Q[h1]
        key = written @ attn_1.W_K[h1]
        expected = query @ key / checks.SQUARE.d_head**0.5
        got = composed_qk_circuit(model, h0, h1)[q_token, k_token]
    torch.testing.assert_close(got, expected)


def test_the_induction_heads_look_for_their_own_token_before_the_key():
    model = models.load_model("induction")
    with torch.no_grad():
        for h1 in range(4):
            matrix = composed_qk_circuit(model, 3, h1)[1:, 1:]
            assert (matrix.argmax(-1) == torch.arange(63)).all()
