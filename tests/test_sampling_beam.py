"""Chapter 7's beam search: it finds the pair greedy decoding misses, it gives what
HuggingFace's generate(num_beams=...) gives on the same weights (end-of-sequence token, length
penalty, early stopping), and its checker names the usual mistakes and accepts a beam search
written differently."""

import pytest
import torch

from checks import sampling as checks
from checks.sampling.beam_search import PROMPT, _tiny_model
from solutions import gpt2
from solutions.sampling import beam_search, generate
from support import assert_accepts, assert_rejects


def test_beam_search_finds_the_pair_greedy_misses():
    trap = checks.greedy_trap()
    assert generate(trap, [[0]], 2, temperature=0.0, use_cache=False)[0][0] == 1
    best, score = beam_search(trap, [0], 2, 2, length_penalty=0.0)[0]
    assert best == [2, 3] and abs(score - torch.tensor(0.36).log().item()) < 1e-6
    assert beam_search(trap, [0], 1, 2)[0][0][0] == 1  # one beam is greedy


@pytest.fixture(scope="module")
def converted():
    """The checker's random GPT-2 (b_U zeroed, which GPT-2 lacks), as HuggingFace's too, and
    the end-of-sequence token: its second choice after the prompt, so that beams end early."""
    model = _tiny_model()
    with torch.no_grad():
        model.unembed.b_U.zero_()
        eos = model(torch.tensor([PROMPT]))[0, -1].topk(2).indices[1].item()
    return model, gpt2.to_huggingface(model), eos


@pytest.mark.parametrize(
    "n_beams, length_penalty, early_stopping",
    [(3, 1.0, False), (4, 0.0, True), (3, 2.0, "never"), (2, -1.0, False)],
)
def test_beam_search_equals_huggingface_generate(
    converted, n_beams, length_penalty, early_stopping
):
    model, hf_model, eos = converted
    ours = beam_search(model, PROMPT, n_beams, 8, eos, length_penalty, early_stopping)
    out = hf_model.generate(
        torch.tensor([PROMPT]), max_new_tokens=8, num_beams=n_beams,
        num_return_sequences=n_beams, do_sample=False, eos_token_id=eos, pad_token_id=eos,
        length_penalty=length_penalty, early_stopping=early_stopping,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    # HuggingFace pads a beam that ended early (here with EOS itself): cut after the first.
    rows = out.sequences[:, len(PROMPT) :].tolist()
    theirs = [row[: row.index(eos) + 1] if eos in row else row for row in rows]
    assert [tokens for tokens, _ in ours] == theirs
    if length_penalty <= 0:  # short beams are not favoured over long: some end at EOS
        assert any(len(tokens) < 8 for tokens in theirs)
    torch.testing.assert_close(
        torch.tensor([score for _, score in ours]), out.sequences_scores, atol=1e-4, rtol=1e-4
    )


def beam_variant(
    *,
    no_length_penalty=False,
    prompt_in_length=False,
    eos_not_counted=False,
    gnmt_penalty=False,
    eos_goes_on=False,
    drop_eos=False,
    ignore_early_stopping=False,
    n_candidates=False,
):
    """A beam search written apart from the reference (Python lists of (log-prob, tokens),
    each beam's own top candidates merged), each switch one mistake."""

    @torch.no_grad()
    def learner(model, prompt, n_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0,
                early_stopping=False):  # fmt: skip
        eos = None if eos_goes_on else eos_token_id
        stop = False if ignore_early_stopping else early_stopping

        def score(log_prob, n, ends_in_eos):
            n = n + len(prompt) if prompt_in_length else n
            n = max(n - 1, 1) if eos_not_counted and ends_in_eos else n
            if no_length_penalty:
                return log_prob
            if gnmt_penalty:  # Google's NMT's ((5 + n) / 6) ** length_penalty
                return log_prob / ((5 + n) / 6) ** length_penalty
            return log_prob / n**length_penalty

        running, finished = [(0.0, [])], []
        width = n_beams if n_candidates else 2 * n_beams
        for step in range(1, max_new_tokens + 1):
            log_probs = model(torch.tensor([prompt + t for _, t in running]))[:, -1].log_softmax(-1)
            candidates = []
            for (base, tokens), row in zip(running, log_probs, strict=True):
                values, ids = row.topk(min(width, row.numel()))
                pairs = zip(values.tolist(), ids.tolist(), strict=True)
                candidates += [(base + v, tokens + [i]) for v, i in pairs]
            candidates = sorted(candidates, key=lambda c: -c[0])[:width]
            was_full, running = len(finished) == n_beams, []
            for rank, (log_prob, tokens) in enumerate(candidates):
                if tokens[-1] == eos or step == max_new_tokens:
                    if rank < n_beams and not (was_full and stop is True):
                        kept = tokens[:-1] if drop_eos and tokens[-1] == eos else tokens
                        finished.append((score(log_prob, step, tokens[-1] == eos), kept))
                elif len(running) < n_beams:
                    running.append((log_prob, tokens))
            finished = sorted(finished, key=lambda f: -f[0])[:n_beams]
            if step == max_new_tokens or not running:
                break
            if len(finished) == n_beams:
                if stop is True:
                    break
                at = max_new_tokens if stop == "never" and length_penalty > 0 else step
                if score(running[0][0], at, False) <= finished[-1][0]:
                    break
        return [(tokens, s) for s, tokens in finished]

    return learner


def test_check_beam_search_accepts_the_reference_and_a_variant(capsys):
    assert_accepts(checks.check_beam_search, beam_search, capsys)
    assert_accepts(checks.check_beam_search, beam_variant(), capsys)


@pytest.mark.parametrize(
    "switch, diagnosis",
    [
        ("no_length_penalty", "left out the length penalty"),
        ("prompt_in_length", "counted the prompt in the length"),
        ("eos_not_counted", "left the end-of-sequence token out of the length"),
        ("gnmt_penalty", "n_new ** length_penalty"),
        ("eos_goes_on", "ignored eos_token_id"),
        ("drop_eos", "drop the end-of-sequence token"),
        ("ignore_early_stopping", "ignored early_stopping"),
        ("n_candidates", "2 beams must still go on after it"),
    ],
)
def test_check_beam_search_names_mistakes(switch, diagnosis):
    assert_rejects(checks.check_beam_search, beam_variant(**{switch: True}), diagnosis)


def test_check_beam_search_names_greedy_and_probabilities():
    def greedy(model, prompt, n_beams, *args):
        return beam_search(model, prompt, 1, *args)

    def probabilities(*args):
        return [(t, torch.tensor(s).exp().item()) for t, s in beam_search(*args)]

    assert_rejects(checks.check_beam_search, greedy, "greedy's")
    assert_rejects(checks.check_beam_search, probabilities, "log-probabilities")
