"""Checkers for chapter 1's embeddings (solutions/embeddings.py): Embed, PosEmbed, Unembed, and
the next-token log-probabilities that the training loss is made of."""

from functools import partial

import torch

from checks._core import CheckFailed, exercise, randomize, scaled, seeded
from solutions import embeddings as ref
from solutions.config import TINY

__all__ = [
    "check_one_hot",
    "check_embed",
    "check_pos_embed",
    "check_sinusoidal_pos_embed",
    "check_unembed",
    "check_next_token_log_probs",
]


MID = TINY.but(d_model=64, d_vocab=1000, n_ctx=128)


def _fail_with_hint(check, failure, hint):
    """Fail the case again with a caught verdict's diagnosis and a hint added."""
    check.fail(failure.diagnosis + hint)


def _tokens(cfg, batch, posn, seed, high=None):
    """Random token ids that include 0 and the largest id, where off-by-ones show."""
    high = high or cfg.d_vocab
    tokens = torch.randint(0, high, (batch, posn), generator=seeded(seed))
    tokens.view(-1)[0], tokens.view(-1)[-1] = 0, high - 1
    return tokens


@exercise(ref.one_hot)
def check_one_hot(check, one_hot):
    cases = [
        (torch.tensor([[0, 3, 2]]), 10),
        (_tokens(TINY, 1, 1, 0), TINY.d_vocab),
        (_tokens(TINY, 2, 5, 1), TINY.d_vocab),
        (_tokens(TINY, 3, 32, 2), TINY.d_vocab),
    ]
    for tokens, d_vocab in cases:
        with check.case(f"tokens of shape {tuple(tokens.shape)}, d_vocab = {d_vocab}"):
            got = check.call(one_hot, tokens, d_vocab, what="one_hot")
            if isinstance(got, torch.Tensor) and not got.is_floating_point():
                check.fail(
                    f"the one-hot rows have dtype {got.dtype}: make them float32 "
                    "(.float()) so that they can multiply W_E."
                )
            if (
                isinstance(got, torch.Tensor)
                and got.shape[:-1] == tokens.shape
                and got.shape[-1] != d_vocab
            ):
                check.fail(
                    f"the rows have {got.shape[-1]} entries, expected d_vocab = {d_vocab}: "
                    "pass num_classes=d_vocab (the largest id in a batch is not d_vocab - 1)."
                )
            check.tensor(got, ref.one_hot(tokens, d_vocab), what="one-hot tensor")


def _module_cases(cfg):
    return [(cfg, 1, 1, 10), (cfg, 2, 5, 11), (cfg, 4, cfg.n_ctx, 12), (MID, 3, 17, 13)]


@exercise(ref.Embed)
def check_embed(check, Embed):
    # The last case's ids stop below d_vocab - 1, as most batches' do: a one-hot product
    # whose rows are only max(tokens) + 1 long runs on the cases before it, not on that one.
    low = TINY.d_vocab // 2
    for i, (cfg, batch, posn, seed, *high) in enumerate(
        [*_module_cases(TINY), (TINY, 2, 5, 14, low)]
    ):
        ids = f", ids below {low}" if high else ""
        with check.case(f"batch {batch}, posn {posn}, d_vocab {cfg.d_vocab}{ids}"):
            ours = randomize(ref.Embed(cfg), seed)
            theirs = check.build(Embed, cfg)
            check.load_weights(theirs, ours)
            tokens = _tokens(cfg, batch, posn, seed, *high)
            expected = ours(tokens)
            try:
                got = check.call(theirs, tokens, what="Embed.forward")
            except CheckFailed as failure:
                # Only the ids differ from the cases that passed: they are what broke it.
                if high and " raised " in failure.diagnosis:
                    _fail_with_hint(
                        check,
                        failure,
                        "\n  Without num_classes, one_hot's rows are max(tokens) + 1 long, here "
                        f"less than d_vocab = {cfg.d_vocab}: pass num_classes=self.cfg.d_vocab, "
                        "or index self.W_E[tokens].",
                    )
                raise
            check.tensor(
                got,
                expected,
                what="embedding",
                mistakes={"scaled by sqrt(d_model): GPT-2 does not": expected * cfg.d_model**0.5},
            )
            if i == 1:  # and W_E trains
                check.gradients(theirs, ours, tokens, what="Embed")


def _check_broadcast(check, got, batch, posn, cfg):
    if (
        isinstance(got, torch.Tensor)
        and got.shape in [(posn, cfg.d_model), (1, posn, cfg.d_model)]
        and got.shape != (batch, posn, cfg.d_model)
    ):
        check.fail(
            f"the positional embedding has shape {tuple(got.shape)}, expected "
            f"{(batch, posn, cfg.d_model)}: give every sequence of the batch its copy "
            "(einops.repeat, or .expand)."
        )


@exercise(ref.PosEmbed)
def check_pos_embed(check, PosEmbed):
    cases = [(TINY, 2, 5, 20, TINY.n_ctx), *_module_cases(TINY)]
    for i, (cfg, batch, posn, seed, *high) in enumerate(cases):
        with check.case(f"batch {batch}, posn {posn}"):
            ours = randomize(ref.PosEmbed(cfg), seed)
            theirs = check.build(PosEmbed, cfg)
            check.load_weights(theirs, ours)
            tokens = _tokens(cfg, batch, posn, seed, *high)
            got = check.call(theirs, tokens, what="PosEmbed.forward")
            _check_broadcast(check, got, batch, posn, cfg)
            mistakes = {"scaled by sqrt(d_model)": ours(tokens) * cfg.d_model**0.5}
            if tokens.max() < cfg.n_ctx:
                mistakes[
                    "indexed W_pos by token id: row i of W_pos belongs to position i, "
                    "whatever token sits there"
                ] = ours.W_pos[tokens]
            if posn < cfg.n_ctx:
                mistakes["started at position 1: the first position is 0, so use W_pos[:posn]"] = (
                    ours.W_pos[1 : posn + 1].expand(batch, -1, -1)
                )
            check.tensor(got, ours(tokens), what="positional embedding", mistakes=mistakes)
            if i == 0:  # and W_pos trains
                check.gradients(theirs, ours, tokens, what="PosEmbed")
    with check.case(f"posn = n_ctx + 1 = {TINY.n_ctx + 1}, with cfg.debug on"):
        theirs = check.build(PosEmbed, TINY)
        try:
            out = theirs(_tokens(TINY, 1, TINY.n_ctx + 1, 3))
        except AssertionError as error:
            if not str(error).strip():
                check.fail(
                    "a sequence of n_ctx + 1 tokens raised an AssertionError with no message: "
                    "say what is wrong, as in assert posn <= self.cfg.n_ctx, "
                    'f"{posn} tokens do not fit in n_ctx = {self.cfg.n_ctx}".'
                )
            out = None
        except Exception:
            out = None
        if out is not None:
            check.fail(
                f"a sequence of n_ctx + 1 tokens returned a tensor of shape "
                f"{tuple(getattr(out, 'shape', ()))} instead of an error: with cfg.debug on, assert "
                "posn <= self.cfg.n_ctx with a message."
            )


def _sinusoidal(n_ctx, d_model, base=10000.0, swap=False, start=0, exponent=2, halves=False):
    """Sinusoidal encodings with one thing changed, to recognise learners' mistakes."""
    pos = torch.arange(start, start + n_ctx, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = pos / base ** (exponent * i / d_model)
    first, second = (angles.cos(), angles.sin()) if swap else (angles.sin(), angles.cos())
    pe = torch.cat([first, second], -1) if halves else torch.stack([first, second], -1)
    return pe.reshape(n_ctx, d_model).float()


@exercise(ref.sinusoidal_pos_embed)
def check_sinusoidal_pos_embed(check, sinusoidal_pos_embed):
    for n_ctx, d_model in [(1, 2), (8, 4), (50, 16), (1024, 768)]:
        with check.case(f"n_ctx {n_ctx}, d_model {d_model}"):
            expected = ref.sinusoidal_pos_embed(n_ctx, d_model)
            got = check.call(sinusoidal_pos_embed, n_ctx, d_model, what="sinusoidal_pos_embed")
            wrong = partial(_sinusoidal, n_ctx, d_model)
            mistakes = {
                "swapped sin and cos: even columns 2i hold sin, odd columns 2i+1 cos": wrong(
                    swap=True
                ),
                "put all the sines first, then all the cosines: interleave them (sin in even "
                "columns, cos in odd ones)": wrong(halves=True),
                "used the column index as 2i: columns 2i and 2i+1 share the frequency "
                "1 / 10000^(2i/d_model), i = 0, 1, ..., d_model/2 - 1": wrong(exponent=4),
                "counted positions from 1: the first position is 0": wrong(start=1),
                "used base 1000: the base is 10000": wrong(base=1000.0),
            }
            # float32 implementations of the same formula differ by ~7e-5 at position 1023;
            # every mistake above is off by more than 0.1 somewhere.
            try:
                check.tensor(got, expected, what="encoding table", mistakes=mistakes, atol=2e-4)
            except CheckFailed as failure:
                if (
                    isinstance(got, torch.Tensor)
                    and got.shape == expected.shape
                    and d_model > 2
                    and torch.allclose(got[:, :2], expected[:, :2], atol=2e-4)
                ):
                    _fail_with_hint(
                        check,
                        failure,
                        "\n  Columns 0 and 1 (frequency 1) are right, later ones are not: "
                        "check the frequencies 1 / 10000^(2i/d_model).",
                    )
                raise


@exercise(ref.Unembed)
def check_unembed(check, Unembed):
    square = TINY.but(d_vocab=TINY.d_model)  # a square W_U, so a transposed one still runs
    cases = [
        (square, 2, 5, 30, 1.0),
        *[c + (1.0,) for c in _module_cases(TINY)],
        (TINY, 2, 7, 31, 1e-3),
        (TINY, 2, 7, 32, 1e3),
    ]
    for cfg, batch, posn, seed, scale in cases:
        with check.case(
            f"batch {batch}, posn {posn}, d_vocab {cfg.d_vocab}" + scaled("residual", scale)
        ):
            ours = randomize(ref.Unembed(cfg), seed)
            theirs = check.build(Unembed, cfg)
            check.load_weights(theirs, ours)
            residual = torch.randn(batch, posn, cfg.d_model, generator=seeded(seed)) * scale
            expected = ours(residual)
            return_logits = ": return the logits themselves"
            mistakes = {
                "returned probabilities (softmax)" + return_logits: expected.softmax(-1),
                "returned log-probabilities (log_softmax)" + return_logits: expected.log_softmax(
                    -1
                ),
                "forgot the bias b_U": expected - ours.b_U,
            }
            if cfg.d_vocab == cfg.d_model:
                mistakes["used W_U transposed: it is [d_model, d_vocab], so residual @ W_U"] = (
                    residual @ ours.W_U.T + ours.b_U
                )
            got = check.call(theirs, residual, what="Unembed.forward")
            check.tensor(got, expected, what="logits tensor", mistakes=mistakes)
            if seed == 30:  # and W_U and b_U train
                check.gradients(theirs, ours, residual, what="Unembed")


def _log_prob_mistakes(logits, tokens):
    """What common mistakes return, by description (each where it can be computed)."""
    log_probs = logits.log_softmax(-1)
    expected = ref.next_token_log_probs(logits, tokens)
    posn = tokens.shape[1]

    def pick(scores, targets):
        return scores.gather(-1, targets[..., None])[..., 0]

    mistakes = {
        "did not shift the targets: the logits at position i predict the token at position "
        "i + 1, so score tokens[:, 1:] against logits[:, :-1]": pick(
            log_probs[:, :-1], tokens[:, :-1]
        ),
        "shifted the wrong way round: the logits at position i predict the token at i + 1, "
        "so pair logits[:, :-1] with tokens[:, 1:]": pick(log_probs[:, 1:], tokens[:, :-1]),
        "returned probabilities (softmax): return their logarithm, computed stably by "
        "log_softmax": expected.exp(),
        "gathered the raw logits: turn them into log-probabilities first (log_softmax over "
        "the d_vocab axis)": pick(logits[:, :-1], tokens[:, 1:]),
        "took the log-probability of the most likely token (max or argmax): score the token "
        "that actually came next, tokens[:, 1:]": log_probs[:, :-1].max(-1).values,
        "returned minus the log-probabilities (the loss at each position): return the "
        "log-probabilities themselves": -expected,
        "kept the last position, scored against a token wrapped round from the start: the last "
        "position has no next token, so drop it (logits[:, :-1])": pick(
            log_probs, tokens.roll(-1, dims=1)
        ),
    }
    if posn > 1:
        mistakes[
            "read every target from the first position's row: index gather with "
            "targets[..., None] (a new last axis), so that position i picks from its own row"
        ] = log_probs[:, 0].gather(-1, tokens[:, 1:])
    if posn > 1 and tokens.max() < posn - 1:
        mistakes[
            "gathered along the position axis: token ids index the d_vocab axis, the last one, "
            "so gather(-1, ...)"
        ] = log_probs[:, :-1].gather(1, tokens[:, 1:, None])[..., 0]
    return mistakes


@exercise(ref.next_token_log_probs)
def check_next_token_log_probs(check, next_token_log_probs):
    # (batch, posn, d_vocab, logit scale, seed). A small vocabulary first, so that a gather
    # along the wrong axis runs and can be named; posn 1 has no next token at all.
    cases = [
        (2, 8, 5, 1.0, 40),
        (1, 1, 7, 1.0, 41),
        (1, 2, 3, 1.0, 42),
        (3, 16, TINY.d_vocab, 1.0, 43),
        (2, 64, MID.d_vocab, 1.0, 44),
        (2, 7, 50, 100.0, 45),
    ]
    for batch, posn, d_vocab, scale, seed in cases:
        with check.case(f"batch {batch}, posn {posn}, d_vocab {d_vocab}, |logits| ~ {scale:g}"):
            gen = seeded(seed)
            logits = torch.randn(batch, posn, d_vocab, generator=gen) * scale
            tokens = torch.randint(0, d_vocab, (batch, posn), generator=gen)
            tokens.view(-1)[-1] = d_vocab - 1  # the largest id, as a target when posn > 1
            expected = ref.next_token_log_probs(logits, tokens)
            got = check.call(next_token_log_probs, logits, tokens, what="next_token_log_probs")
            if (
                isinstance(got, torch.Tensor)
                and got.shape == expected.shape
                and got.is_floating_point()
                and (got == -torch.inf).any()
            ):
                check.fail(
                    "some log-probabilities are -inf: the softmax of an unlikely token "
                    "underflows to 0, and log(0) = -inf. log_softmax computes "
                    "logits - logsumexp(logits) and stays finite."
                )
            shapes = [
                (
                    (batch, posn),
                    "kept the last position: it has no next token, so return posn - 1 values "
                    "per sequence (logits[:, :-1] against tokens[:, 1:])",
                ),
                (
                    (),
                    "returned one number: return the log-probability at every position (the "
                    "loss is minus their mean). If you squeezed, squeeze only the axis gather "
                    "added: .squeeze(-1)",
                ),
            ]
            if batch > 1:
                shapes.append(
                    (
                        (batch * (posn - 1),),
                        "returned a flat vector: give it the shape (batch, posn - 1)",
                    )
                )
            else:
                shapes.append(
                    (
                        (posn - 1,),
                        "squeezed away the batch axis: squeeze only the axis gather added, "
                        ".squeeze(-1) (or index it with [..., 0])",
                    )
                )
            check.tensor(
                got,
                expected,
                what="log-probability tensor",
                mistakes=_log_prob_mistakes(logits, tokens),
                shapes=shapes,
            )
