"""Chapter 5's checkers of the stream taken apart: its decomposition into the parts that wrote
into it (which must sum to the final stream) and the count of those parts in models of several
sizes, GPT-2 small and a Llama-3-8B-sized one included."""

from checks._configs import UNEVEN_HEADS
from checks._core import exercise, kind_of, plural
from checks.residual._common import _call_on_cache, _cases
from solutions import residual as ref
from solutions.config import GPT2_SMALL


@exercise(ref.decompose_resid)
def check_decompose_resid(check, decompose_resid):
    for model, tokens in _cases(check, seed=40):
        _, cache = ref.run_with_cache(model, tokens)
        want, labels = ref.decompose_resid(cache, model)
        out = _call_on_cache(check, decompose_resid, cache, model, what="decompose_resid")
        parts, got_labels = check.pair(out, "(components, labels)")
        check.equal(
            list(got_labels) if isinstance(got_labels, tuple | list) else got_labels,
            labels,
            what="labels",
            hint=" Per layer: each head (L0H0, ...), then the layer's b_O (L0 b_O), then its "
            "MLP (L0 MLP) where it has one.",
        )
        heads_with_bias = want.clone()
        for i, label in enumerate(labels):
            if label.endswith(" b_O"):
                n = model.cfg.n_heads
                heads_with_bias[i - n : i] += want[i] / n
                heads_with_bias[i] = 0.0
        check.tensor(
            parts,
            want,
            what="components",
            mistakes={"split b_O among the heads: keep it whole, as its own component": (
                heads_with_bias
            )},
        )  # fmt: skip
        resid = cache[f"blocks.{len(model.blocks) - 1}.hook_resid_post"]
        check.tensor(parts.sum(0), resid, what="sum of the components (the final stream)")


@exercise(ref.count_stream_vectors)
def check_count_stream_vectors(check, count_stream_vectors):
    cases = [
        (GPT2_SMALL, 1, True, True),
        (GPT2_SMALL, 1024, True, True),
        (ref.LLAMA3_8B, 1, False, False),
        (ref.LLAMA3_8B, 8192, False, False),
        (UNEVEN_HEADS, 7, True, False),
    ]
    for cfg, n_ctx, pos, biases in cases:
        name = {GPT2_SMALL: "GPT-2 small", ref.LLAMA3_8B: "Llama-3-8B-sized"}.get(
            cfg, "ODD (3 heads of 4 in d_model 20, d_mlp 28)"
        )
        with check.case(f"{name}, {plural(n_ctx, 'position')}, pos_embed={pos}, biases={biases}"):
            want = ref.count_stream_vectors(cfg, n_ctx, pos_embed=pos, biases=biases)
            got = check.call(
                lambda cfg=cfg, n=n_ctx, pos=pos, biases=biases: count_stream_vectors(
                    cfg, n, pos_embed=pos, biases=biases
                ),
                what="count_stream_vectors",
            )
            if not isinstance(got, dict):
                check.fail(f"return a dict of counts, not {kind_of(got)}.")
            hints = {
                "messages": " At each position one message per head per layer (n_layers · "
                "n_heads), and each mixes a source vector v_j W_O from every earlier position: "
                "over a context, n_layers · n_heads · n_ctx of them.",
                "memories": " A memory is a row of W_out, n_layers · d_mlp of them: the same "
                "rows at every position (only their activations change), so their count does "
                "not grow with the context.",
                "embeddings": " At each position the token's embedding, and the position's "
                "where it is learned.",
                "biases": " b_O and b_out, once per layer: the same vectors at every position, "
                "so their count does not grow with the context.",
            }
            for part, hint in hints.items():
                check.equal(got.get(part), want[part], what=f"count of {part}", hint=hint)
