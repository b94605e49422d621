"""The checker of chapter 7's beam search, on greedy_trap (a bigram model where greedy decoding
misses the most probable pair), on a random bigram model (with enough beams to keep every
prefix, its beams must equal those found by scoring every continuation), and on a random
GPT-2 with an end-of-sequence token, under length penalties and early stopping, where the
reference gives what HuggingFace's generate(num_beams=...) gives.
Scores that are not each beam's own log-probability / n_new ** length_penalty (no penalty,
the prompt or not EOS counted in the length), and beams that drop EOS, or ignore the length
penalty, EOS or early stopping, are named."""

import torch

from checks._core import exercise, randomize, seeded
from solutions import sampling as ref
from solutions.config import TINY
from solutions.transformer import Transformer


def greedy_trap() -> ref.BigramModel:
    """A bigram model on 4 tokens where greedy decoding misses the most probable pair.

    After token 0: token 1 has probability 0.6, token 2 has 0.4. After 1 the next token is
    unsure (at best 3, 0.4); after 2, token 3 is almost certain (0.9). Greedy takes 1, 3
    (0.6 × 0.4 = 0.24); the best pair is 2, 3 (0.4 × 0.9 = 0.36)."""
    probs = torch.tensor(
        [
            [0.0, 0.6, 0.4, 0.0],
            [0.1, 0.2, 0.3, 0.4],
            [0.05, 0.0, 0.05, 0.9],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    return ref.BigramModel(probs.log())


def eos_first() -> ref.BigramModel:
    """A bigram model whose best first token after 1 is the end-of-sequence token 0 (0.4),
    ahead of 2 (0.3) and 3 (0.25); after 3, EOS is nearly certain. With 2 beams, the best
    two-token sequence [3, 0] is found only if 2 beams go on after EOS took its place."""
    probs = torch.tensor(
        [
            [0.2] * 5,
            [0.0, 0.0, 0.3, 0.25, 0.05],
            [0.3, 0.0, 0.2, 0.2, 0.3],
            [0.95, 0.0, 0.0, 0.0, 0.05],
            [0.2] * 5,
        ]
    )
    probs[1, 0] = 0.4
    return ref.BigramModel(probs.log())


def _tiny_model() -> Transformer:
    return randomize(Transformer(TINY), seed=3, scale=0.3).eval()


PROMPT = [5, 17, 3, 8]
# (n_beams, length_penalty, early_stopping) on the random model, with an end-of-sequence token
# it draws often: HuggingFace's generate(num_beams=...) gives the same beams for each.
SETTINGS = [(3, 1.0, True), (3, 0.0, False), (4, 2.0, "never"), (2, -1.0, False), (5, 1.0, False)]


@exercise(ref.beam_search)
def check_beam_search(check, beam_search):
    random_bigram = ref.BigramModel(torch.randn(6, 6, generator=seeded(5)) * 2)
    tiny = _tiny_model()
    with torch.no_grad():
        eos = tiny(torch.tensor([PROMPT]))[0, -1].topk(4).indices[3].item()
    cases = [
        (greedy_trap(), [0], 2, 2, None, 0.0, False,
         "greedy takes 1, 3 (0.24); the best pair is 2, 3 (0.36)"),
        (random_bigram, [0, 4], 3, 4, None, 1.0, False, "a random bigram model, 3 beams, 4 tokens"),
        (random_bigram, [2], 36, 3, None, 0.0, False,
         "36 beams over 6 tokens keep every 2-token prefix: exact"),
    ]  # fmt: skip
    cases += [
        (tiny, PROMPT, n, 8, eos, lp, stop,
         f"a random GPT-2, {n} beams, eos_token_id {eos}, length_penalty {lp}, early_stopping {stop}")
        for n, lp, stop in SETTINGS
    ] + [(eos_first(), [1], 2, 3, 0, 1.0, False,
          "EOS (0) is the best first token: 2 beams must still go on after it")]  # fmt: skip
    for model, prompt, n_beams, n_new, eos_id, lp, stop, label in cases:
        with check.case(label):
            args = (model, prompt, n_beams, n_new, eos_id, lp, stop)
            expected = ref.beam_search(*args)
            got = check.call(beam_search, *args)
            if not isinstance(got, list) or not all(
                isinstance(b, tuple | list) and len(b) == 2 for b in got
            ):
                check.fail("return a list of (tokens, score) pairs, best first.")
            tokens = [list(map(int, b[0])) for b in got]
            scores = torch.tensor([float(b[1]) for b in got])
            if tokens and model is not random_bigram and model is not tiny and tokens[0][:1] == [1]:
                check.fail("your best beam is greedy's: keep n_beams candidates at every step.")
            want = [b[0] for b in expected]
            if (
                tokens != want
                and eos_id is not None
                and [t + [eos_id] if len(t) < n_new else t for t in tokens] == want
            ):
                check.fail(
                    f"your beams drop the end-of-sequence token {eos_id}: keep it as their last."
                )
            _check_own_scores(check, tokens, scores, args)
            if tokens != want:
                _name_beam_mistake(check, tokens, want, args)
            check.equal(tokens, want, what="beams, best first")
            check.tensor(scores, torch.tensor([b[1] for b in expected]), what="beams' scores")
            if n_beams == 36:
                brute = _brute_force(model, prompt, n_new)[:n_beams]
                check.equal(tokens, [b[0] for b in brute], what="beams, against every sequence")


def _check_own_scores(check, tokens, scores, args) -> None:
    """Each beam's score must be its own log-probability / n_new ** length_penalty, whatever
    beams were found: a score computed otherwise is named before the search is judged."""
    model, prompt, n_beams, n_new, eos_id, lp, stop = args
    d_vocab = model(torch.tensor([prompt])).shape[-1]
    if not all(0 < len(t) <= n_new and all(0 <= i < d_vocab for i in t) for t in tokens):
        check.fail(f"each beam should hold 1 to {n_new} new tokens, ids below {d_vocab}.")
    if not tokens:
        return
    log_prob = _log_probs(model, prompt, tokens)
    n = torch.tensor([float(len(t)) for t in tokens])
    no_eos = n - torch.tensor([float(t[-1] == eos_id) for t in tokens])
    wrong = {
        "returned probabilities: return log-probabilities": (log_prob / n**lp).exp(),
        "left out the length penalty: divide each beam's log-probability by n_new ** "
        "length_penalty": log_prob,
        "counted the prompt in the length: n_new counts the new tokens only": (
            log_prob / (n + len(prompt)) ** lp),
        "left the end-of-sequence token out of the length: n_new counts it": (
            log_prob / no_eos.clamp(min=1) ** lp),
        "used Google's NMT penalty ((5 + n) / 6) ** length_penalty: HuggingFace's divides by "
        "n_new ** length_penalty": log_prob / ((5 + n) / 6) ** lp,
        "multiplied by length_penalty: divide by n_new raised to the power length_penalty": (
            log_prob / (n * lp).clamp(min=1e-3)),
    }  # fmt: skip
    check.tensor(
        scores,
        log_prob / n**lp,
        what="beams' scores, against the log-probabilities of your own beams",
        mistakes=wrong,
        atol=1e-4,
    )


@torch.no_grad()
def _log_probs(model, prompt: list[int], beams: list[list[int]]) -> torch.Tensor:
    """Each beam's log-probability after the prompt, in one batch padded on the right (a
    causal model's logits at a position never see the padding after it)."""
    width = max(map(len, beams))
    new = torch.tensor([beam + [0] * (width - len(beam)) for beam in beams])
    tokens = torch.cat([torch.tensor(prompt).expand(len(beams), -1), new], dim=1)
    log_probs = model(tokens[:, :-1]).log_softmax(-1)[:, len(prompt) - 1 :]
    real = torch.arange(width)[None, :] < torch.tensor(list(map(len, beams)))[:, None]
    return (log_probs.gather(-1, new[..., None])[..., 0] * real).sum(-1)


def _name_beam_mistake(check, tokens, want, args) -> None:
    model, prompt, n_beams, n_new, eos_id, lp, stop = args
    wrong = {
        "ignored length_penalty: a finished beam's score is its log-probability / n_new ** "
        "length_penalty (n_new counts the EOS token)": (eos_id, 0.0, stop),
        "ignored eos_token_id: a beam that draws it is finished, and goes on no further": (
            None, lp, stop),
        "ignored early_stopping: with True, stop once n_beams beams have finished; with False, "
        "once the best running beam's score at its present length cannot beat the worst "
        "finished one; \"never\" scores it at max_new_tokens if length_penalty > 0": (
            eos_id, lp, not stop if isinstance(stop, bool) else False),
    }  # fmt: skip
    for mistake, (e, p, s) in wrong.items():
        if (e, p, s) != (eos_id, lp, stop):
            other = [b[0] for b in ref.beam_search(model, prompt, n_beams, n_new, e, p, s)]
            if other == tokens and other != want:
                check.fail(
                    f"your beams are {tokens}, expected {want}: it looks like you {mistake}."
                )


def _brute_force(model, prompt: list[int], n_new: int) -> list[tuple[list[int], float]]:
    """Every continuation of n_new tokens with its log-probability, best first."""
    d_vocab = model(torch.tensor([prompt])).shape[-1]
    scored = []
    for index in range(d_vocab**n_new):
        tokens = [index // d_vocab**i % d_vocab for i in reversed(range(n_new))]
        full = torch.tensor([prompt + tokens])
        log_probs = model(full[:, :-1]).log_softmax(-1)[0, len(prompt) - 1 :]
        scored.append((tokens, log_probs.gather(-1, torch.tensor(tokens)[:, None]).sum().item()))
    return sorted(scored, key=lambda pair: -pair[1])
