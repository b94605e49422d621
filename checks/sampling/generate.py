"""The checker of chapter 7's generation loop, generate: its tokens against the reference's on
a small random model, greedy and seeded, with the cache and without, for one prompt and a
left-padded batch, with penalties, an end-of-sequence token, a stop condition and a run past
the context window. A spy on the model's embedding sees what each step feeds it, so that
the whole sequence fed to a cached step is named; the cache against no cache, a batch against
each prompt alone, and two runs of one seed tell apart the positions lost with the cache,
unmasked padding and a seed not honoured."""

from checks._core import exercise, randomize
from checks._hooks import hooks_left, hooks_on, left_message
from checks._verdicts import CheckFailed
from solutions import sampling as ref
from solutions.config import TINY
from solutions.transformer import Transformer

PROMPTS = [[5, 17, 3], [8, 1, 2, 44, 9, 70], [33]]
SAMPLED = {
    "temperature 0.8": dict(temperature=0.8),
    "top-k 5": dict(top_k=5),
    "top-p 0.9 at temperature 1.3": dict(top_p=0.9, temperature=1.3),
    "penalties": dict(frequency_penalty=0.8, presence_penalty=0.5),
}
WHOLE_SEQUENCE = (
    "With the cache, a step fed the model more than the new token: the cache already holds "
    "the earlier positions, so feed only the token just drawn."
)
PAST_N_CTX = (
    "Past n_ctx tokens, read the last n_ctx only (tokens[:, -n_ctx:]), their positions again "
    "from 0: the cached keys no longer hold, so start a new cache from that window each step."
)


def _model() -> Transformer:
    model = randomize(Transformer(TINY), seed=7, scale=0.3).eval()
    model.fed = []  # the number of positions of every call to the embedding
    model.embed.register_forward_hook(lambda _m, args, _out: model.fed.append(args[0].shape[1]))
    return model


def _run(check, generate, model, prompts, n_new, **kw):
    model.fed.clear()
    hooks = hooks_on(model)  # the spy's own hook among them
    try:
        got = check.call(lambda: generate(model, prompts, n_new, **kw), what="generate")
    except CheckFailed as failure:
        if kw.get("use_cache", True) and _fed_whole_sequence(model):
            check.fail(f"{failure.diagnosis}\n{WHOLE_SEQUENCE} (positions fed: {model.fed})")
        raise
    if left := hooks_left(hooks, hooks_on(model)):
        check.fail(left_message(left, "generate"))
    if not isinstance(got, list | tuple) or len(got) != len(prompts):
        check.fail(f"return one list of new tokens per prompt ({len(prompts)} lists).")
    try:
        return [[int(t) for t in row] for row in got]
    except (TypeError, ValueError):
        check.fail("return lists of token ids (ints), one list per prompt.")


def _fed_whole_sequence(model) -> bool:
    return any(n > 1 for n in model.fed[1:])


@exercise(ref.generate)
def check_generate(check, generate):
    model = _model()
    one = [PROMPTS[1]]
    with check.case("greedy, one prompt, without the cache: the model on the whole sequence"):
        expected = ref.generate(model, one, 8, temperature=0.0, use_cache=False)
        uncached = _run(check, generate, model, one, 8, temperature=0.0, use_cache=False)
        check.equal(uncached, expected, what="new tokens")
    with check.case("greedy, one prompt, with the cache: one new position a step"):
        cached = _run(check, generate, model, one, 8, temperature=0.0)
        if _fed_whole_sequence(model) and cached != expected:
            check.fail(
                "with the cache, a step fed the model more than the new token (positions fed: "
                f"{model.fed}): the cache already holds the earlier ones, so feed only the "
                "token just drawn."
            )
        if cached != expected:
            check.fail(
                f"with the cache you generated {cached[0]}, without it {expected[0]}: the "
                "positions went wrong. With a cache, pass forward_with_cache the mask of every "
                "position, cached and new, so that the new token's position counts the ones "
                "before it (not 0) and its query sees their keys."
            )
        if _fed_whole_sequence(model):
            check.fail(
                f"with the cache, a step fed the model more than the new token ({model.fed}): "
                "feed only the token just drawn, else the cache is not saving any work."
            )
    with check.case("greedy, a left-padded batch of three prompts of different lengths"):
        expected = ref.generate(model, PROMPTS, 8, temperature=0.0)
        for use_cache in (True, False):
            got = _run(check, generate, model, PROMPTS, 8, temperature=0.0, use_cache=use_cache)
            if got != expected:
                alone = [_run(check, generate, model, [p], 8, temperature=0.0)[0] for p in PROMPTS]
                if alone == expected:
                    check.fail(
                        f"(use_cache={use_cache}) each prompt alone gives its tokens, but in "
                        "one batch it does not: the padding counts. Pass left_pad's mask to "
                        "forward_with_cache (growing by one True column a step), so that no "
                        "real token attends to padding or counts it in its position."
                    )
                check.equal(got, expected, what=f"new tokens (use_cache={use_cache})")
    for name, settings in SAMPLED.items():
        with check.case(f"{name}, seed 3, the batch, with the cache and without"):
            expected = ref.generate(model, PROMPTS, 10, seed=3, **settings)
            got = _run(check, generate, model, PROMPTS, 10, seed=3, **settings)
            again = _run(check, generate, model, PROMPTS, 10, seed=3, **settings)
            if got != again:
                check.fail(
                    "two runs with seed 3 drew different tokens: make the generator from the "
                    "seed, torch.Generator().manual_seed(seed), and pass it to "
                    "sample_next_token at every step."
                )
            if got != expected and got == _run(check, generate, model, PROMPTS, 10, seed=4,
                                               **settings):  # fmt: skip
                check.fail("seeds 3 and 4 drew the same tokens: seed the generator with `seed`.")
            if got != expected and "frequency_penalty" in settings:
                check.fail(
                    f"with penalties you generated {got}, expected {expected}: lower the "
                    "logits with apply_penalties before sampling, counting only the tokens "
                    "generated so far in each row (not the prompt, not the padding)."
                )
            check.equal(got, expected, what="new tokens", hint=(
                " Draw once a step for the whole batch: sample_next_token(logits, temperature, "
                "top_k, top_p, generator) on the last position's logits."
            ))  # fmt: skip
            uncached = _run(check, generate, model, PROMPTS, 10, seed=3, use_cache=False,
                            **settings)  # fmt: skip
            check.equal(uncached, expected, what="new tokens without the cache")
    with check.case("greedy, stopping at eos_token_id and at stop(tokens)"):
        free = ref.generate(model, PROMPTS, 8, temperature=0.0)
        eos = free[1][3]
        expected = ref.generate(model, PROMPTS, 8, temperature=0.0, eos_token_id=eos)
        got = _run(check, generate, model, PROMPTS, 8, temperature=0.0, eos_token_id=eos)
        if got[1] == free[1][:4]:
            check.fail(f"row 1 kept the end-of-sequence token {eos}: stop before adding it.")
        shorter = [len(g) < len(e) and e[: len(g)] == g for g, e in zip(got, expected, strict=True)]
        if any(shorter) and all(
            s or g == e for s, g, e in zip(shorter, got, expected, strict=True)
        ):
            check.fail(
                f"you gave {got}, expected {expected}: rows stopped early. Each row stops on "
                "its own: the others go on until they draw eos_token_id."
            )
        if got[1] != expected[1]:
            check.fail(
                f"row 1 draws {eos} (eos_token_id) as its 4th token, so it stops with "
                f"{expected[1]}; you gave {got[1]}."
            )
        check.equal(got, expected, what="new tokens", hint=(
            " Each row stops on its own: the others go on until they draw eos_token_id."
        ))  # fmt: skip
        got = _run(check, generate, model, PROMPTS, 8, temperature=0.0, stop=lambda t: len(t) == 3)
        check.equal(got, [row[:3] for row in free], what="new tokens with stop=len(tokens) == 3")
    with check.case(f"greedy, past the context window (n_ctx {TINY.n_ctx}): 6 + 40 tokens"):
        expected = ref.generate(model, one, 40, temperature=0.0)
        for use_cache in (True, False):
            try:
                got = _run(check, generate, model, one, 40, temperature=0.0, use_cache=use_cache)
                check.equal(got, expected, what=f"new tokens (use_cache={use_cache})")
            except CheckFailed as failure:
                check.fail(f"{failure.diagnosis}\n{PAST_N_CTX}")
