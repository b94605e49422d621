"""The checker of chapter 7's beam search, on greedy_trap (a bigram model where greedy decoding
misses the most probable pair) and on a random bigram model; with enough beams to keep every
prefix, its beams must equal those found by scoring every continuation."""

import torch

from checks._core import exercise, seeded
from solutions import sampling as ref


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


@exercise(ref.beam_search)
def check_beam_search(check, beam_search):
    random_bigram = ref.BigramModel(torch.randn(6, 6, generator=seeded(5)) * 2)
    cases = [
        (greedy_trap(), [0], 2, 2, "greedy takes 1, 3 (0.24); the best pair is 2, 3 (0.36)"),
        (random_bigram, [0, 4], 3, 4, "a random bigram model, 3 beams, 4 tokens"),
        (random_bigram, [2], 36, 3, "36 beams over 6 tokens keep every 2-token prefix: exact"),
    ]  # fmt: skip
    for model, prompt, n_beams, n_new, label in cases:
        with check.case(label):
            expected = ref.beam_search(model, prompt, n_beams, n_new)
            got = check.call(beam_search, model, prompt, n_beams, n_new)
            if not isinstance(got, list) or not all(
                isinstance(b, tuple | list) and len(b) == 2 for b in got
            ):
                check.fail("return a list of (tokens, log-probability) pairs, best first.")
            tokens = [list(map(int, b[0])) for b in got]
            scores = [float(b[1]) for b in got]
            if tokens and model is not random_bigram and tokens[0][:1] == [1]:
                check.fail("your best beam is greedy's: keep n_beams candidates at every step.")
            check.equal(tokens, [b[0] for b in expected], what="beams, best first")
            expected_scores = torch.tensor([b[1] for b in expected])
            got_scores = torch.tensor(scores)
            check.tensor(
                got_scores,
                expected_scores,
                what="beams' log-probabilities",
                mistakes={
                    "returned probabilities: return log-probabilities": expected_scores.exp()
                },
            )
            if n_beams == 36:
                brute = _brute_force(model, prompt, n_new)[:n_beams]
                check.equal(tokens, [b[0] for b in brute], what="beams, against every sequence")


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
