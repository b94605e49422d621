"""Chapter 5's checkers of what the stream says about a prediction: the logit lens (ln_final
and the unembedding applied at every layer) and direct logit attribution (each part's share of
the logit difference, with ln_final's scale frozen from the run). Each usual slip with ln_final
(left out, its scale reused or recomputed, its w or b dropped) is named in the verdict."""

import torch

from checks._core import exercise
from checks.residual._common import _call_on_cache, _cases
from solutions import residual as ref


@exercise(ref.logit_lens)
def check_logit_lens(check, logit_lens):
    for model, tokens in _cases(check, seed=60):
        logits, cache = ref.run_with_cache(model, tokens)
        want = ref.logit_lens(cache, model)
        n = len(model.blocks)
        streams = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)]
        streams.append(cache[f"blocks.{n - 1}.hook_resid_post"])
        frozen = cache["ln_final.hook_scale"]
        ln, unembed = model.ln_final, model.unembed
        centred = [s - s.mean(-1, keepdim=True) for s in streams]
        mistakes = {
            "left out ln_final: the unembedding reads ln_final(stream), at every layer too": (
                torch.stack([unembed(s) for s in streams])
            ),
            "reused the final run's ln_final scale: each point of the stream has its own "
            "scale, so apply the whole ln_final to it": torch.stack(
                [unembed(c / frozen * ln.w + ln.b) for c in centred]
            ),
        }
        post = [cache[f"blocks.{i}.hook_resid_post"] for i in range(n)]
        shapes = [
            ((n, *logits.shape), "left out the stream before block 0 (the embeddings alone), "
             "or the one after the last block"),
        ]  # fmt: skip
        mistakes["used each block's resid_post and left out the embeddings alone"] = torch.stack(
            [unembed(ln(s)) for s in post]
        )
        mistakes["left out b_U: the logits are ln_final(stream) @ W_U + b_U"] = torch.stack(
            [ln(s) @ unembed.W_U for s in streams]
        )
        got = _call_on_cache(check, logit_lens, cache, model, what="logit_lens")
        check.tensor(got, want, what="logits of the lens", mistakes=mistakes, shapes=shapes)
        check.tensor(got[-1], logits, what="last layer of the lens (the model's own logits)")


@exercise(ref.direct_logit_attribution)
def check_direct_logit_attribution(check, direct_logit_attribution):
    for i, (model, tokens) in enumerate(_cases(check, seed=70)):
        logits, cache = ref.run_with_cache(model, tokens)
        correct, wrong = 3 + i, 11 + 2 * i
        want, labels = ref.direct_logit_attribution(cache, model, correct, wrong)
        parts, _ = ref.decompose_resid(cache, model)
        ln, W_U = model.ln_final, model.unembed.W_U
        direction = W_U[:, correct] - W_U[:, wrong]
        scale = cache["ln_final.hook_scale"]
        centred = parts - parts.mean(-1, keepdim=True)
        bias = want[-1:]
        # A scale recomputed from each part alone, as if it were the whole stream.
        own = (centred.pow(2).mean(-1, keepdim=True) + model.cfg.layer_norm_eps).sqrt()
        mistakes = {
            "did not centre the parts: ln_final subtracts each position's mean, a linear "
            "step, so subtract each part's mean": torch.cat(
                [(parts / scale * ln.w) @ direction, bias]
            ),
            "did not divide by ln_final's scale (frozen from the run: cache['ln_final."
            "hook_scale'])": torch.cat([(centred * ln.w) @ direction, bias]),
            "left out ln_final's w": torch.cat([(centred / scale) @ direction, bias]),
            "gave each part its own LayerNorm scale: freeze the run's, the whole stream's": (
                torch.cat([(centred / own * ln.w) @ direction, bias])
            ),
            "took logit[wrong] - logit[correct]: the direction is W_U[:, correct] - "
            "W_U[:, wrong]": -want,
            "left ln_final's b out of the bias component: it is ln_final.b · (W_U[:, correct] "
            "- W_U[:, wrong]) + b_U[correct] - b_U[wrong]": torch.cat(
                [want[:-1], bias - ln.b @ direction]
            ),
            "left b_U out of the bias component: add b_U[correct] - b_U[wrong]": torch.cat(
                [want[:-1], bias - (model.unembed.b_U[correct] - model.unembed.b_U[wrong])]
            ),
        }
        got = _call_on_cache(
            check,
            direct_logit_attribution,
            cache,
            model,
            correct,
            wrong,
            what="direct_logit_attribution",
        )
        shares, got_labels = check.pair(got, "(attributions, labels)")
        check.equal(
            list(got_labels) if isinstance(got_labels, tuple | list) else got_labels,
            labels,
            what="labels",
            hint=" decompose_resid's labels, then 'bias' for ln_final's b and b_U.",
        )
        check.tensor(shares, want, what="attributions", mistakes=mistakes)
        diff = logits[..., correct] - logits[..., wrong]
        check.tensor(shares.sum(0), diff, what="sum of the attributions (the logit difference)")
