"""Checkers for chapter 5's assembly (solutions/transformer.py): the block and the model.

Every parameter is random, LayerNorm w and b included (with w = 1 and b = 0, ln1 and ln2
are the same function and swapping them goes unseen), on configs with three layers (so
that blocks applied in the wrong order, or only some of them, show) and several shapes.
The mistakes are computed with the reference's own modules and named when they match.
"""

import torch

from checks._configs import HEADS_SHORT_OF_D_MODEL
from checks._core import exercise, plural, randomize, seeded
from solutions import transformer as ref
from solutions.config import TINY

__all__ = ["check_transformer_block", "check_transformer"]

THREE = TINY.but(n_layers=3)
SCALE = 0.3  # random weights this size keep the softmax and GELU away from saturation
BLOCK_CASES = [
    (TINY, 2, 5),
    (HEADS_SHORT_OF_D_MODEL, 3, 4),
    (HEADS_SHORT_OF_D_MODEL, 1, 1),
    (TINY, 1, 9),
]
MODEL_CASES = [(THREE, 2, 6), (HEADS_SHORT_OF_D_MODEL, 3, 5), (HEADS_SHORT_OF_D_MODEL, 1, 1)]


def block_mistakes(block: ref.TransformerBlock, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a block computes with each usual mistake, on the same weights."""
    ln1, attn, ln2, mlp = block.ln1, block.attn, block.ln2, block.mlp
    mid = x + attn(ln1(x))
    post_norm_mid = ln1(x + attn(x))
    mlp_first = x + mlp(ln2(x))
    no_attn_residual = attn(ln1(x))
    return {
        "normalised after adding (post-norm: ln(x + attn(x))): GPT-2 is pre-norm, "
        "x + attn(ln1(x)); the stream itself is never normalised": post_norm_mid
        + mlp(ln2(post_norm_mid)),
        "built post-norm blocks: GPT-2 is pre-norm, x + attn(ln1(x))": ln2(
            post_norm_mid + mlp(post_norm_mid)
        ),
        "left out the residual around attention: resid_mid = resid_pre + attn(ln1(resid_pre))": (
            no_attn_residual + mlp(ln2(no_attn_residual))
        ),
        "left out the residual around the MLP: resid_post = resid_mid + mlp(ln2(resid_mid))": mlp(
            ln2(mid)
        ),
        "used ln1 before the MLP: ln1 is attention's, the MLP reads ln2(resid_mid)": mid
        + mlp(ln1(mid)),
        "used ln2 before attention: attention reads ln1(resid_pre)": (x + attn(ln2(x)))
        + mlp(ln2(x + attn(ln2(x)))),
        "swapped ln1 and ln2": (x + attn(ln2(x))) + mlp(ln1(x + attn(ln2(x)))),
        "applied attention and the MLP in parallel (both reading resid_pre): the MLP reads "
        "resid_mid, after attention has written": x + attn(ln1(x)) + mlp(ln2(x)),
        "applied the MLP before attention: attention comes first": mlp_first + attn(ln1(mlp_first)),
        "left out the LayerNorms": (x + attn(x)) + mlp(x + attn(x)),
        "added attention's output to the normalised stream, not to the stream itself": ln1(x)
        + attn(ln1(x))
        + mlp(ln2(ln1(x) + attn(ln1(x)))),
    }


@exercise(ref.TransformerBlock)
def check_transformer_block(check, TransformerBlock):
    for i, (cfg, batch, posn) in enumerate(BLOCK_CASES):
        label = "TINY" if cfg == TINY else "ODD"
        with check.case(f"{label}, batch {batch}, {plural(posn, 'position')}, random weights"):
            reference = randomize(ref.TransformerBlock(cfg), seed=i, scale=SCALE)
            block = check.build(TransformerBlock, cfg)
            check.load_weights(block, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(10 + i))
            with torch.no_grad():
                expected = reference(x)
                mistakes = block_mistakes(reference, x)
                got = check.call(block, x, what="TransformerBlock.forward")
            check.tensor(got, expected, what="block's output", mistakes=mistakes)
            if i == 0:  # and it trains: both norms, the attention and the MLP get gradients
                check.gradients(block, reference, x, what="TransformerBlock", seed=i)


def model_mistakes(model: ref.Transformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a model computes with each usual mistake, on the same weights."""
    blocks = list(model.blocks)

    def run(residual, order, final=True):
        for block in order:
            residual = block(residual)
        return model.unembed(model.ln_final(residual) if final else residual)

    embed, pos = model.embed(tokens), model.pos_embed(tokens)
    return {
        "left out ln_final: the unembedding reads ln_final(residual)": run(
            embed + pos, blocks, final=False
        ),
        "left out the positional embedding: the stream starts as embed + pos_embed": run(
            embed, blocks
        ),
        "left out the token embedding: the stream starts as embed + pos_embed": run(pos, blocks),
        "applied the blocks in reverse order: block 0 comes first": run(embed + pos, blocks[::-1]),
        "applied only the first block: `for block in self.blocks:` applies each in turn": run(
            embed + pos, blocks[:1]
        ),
        "applied only the last block: each block reads what the one before it wrote": run(
            embed + pos, blocks[-1:]
        ),
        "applied ln_final before the blocks, not after them": model.unembed(
            _blocks(blocks, model.ln_final(embed + pos))
        ),
    }


def _blocks(blocks, residual):
    for block in blocks:
        residual = block(residual)
    return residual


@exercise(ref.Transformer)
def check_transformer(check, Transformer):
    for i, (cfg, batch, posn) in enumerate(MODEL_CASES):
        label = "TINY with 3 layers" if cfg == THREE else "ODD"
        with check.case(f"{label}, batch {batch}, {plural(posn, 'position')}, random weights"):
            reference = randomize(ref.Transformer(cfg), seed=20 + i, scale=SCALE)
            model = check.build(Transformer, cfg)
            blocks = getattr(model, "blocks", None)
            if isinstance(blocks, torch.nn.ModuleList | torch.nn.Sequential | list | tuple) and len(
                {id(b) for b in blocks}
            ) < len(list(blocks)):
                check.fail(
                    "your blocks are one and the same module, repeated: [TransformerBlock(cfg)] "
                    "* n_layers lists one block n_layers times. Build a new one for each layer: "
                    "nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])."
                )
            check.load_weights(model, reference)
            tokens = torch.randint(cfg.d_vocab, (batch, posn), generator=seeded(30 + i))
            with torch.no_grad():
                expected = reference(tokens)
                mistakes = model_mistakes(reference, tokens)
                got = check.call(model, tokens, what="Transformer.forward")
                if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                    _check_blocks(check, model, reference, tokens)
            check.tensor(got, expected, what="logits", mistakes=mistakes)
            if i == 0:  # and it trains: the embeddings, every block and the unembedding
                check.gradients(model, reference, tokens, what="Transformer", seed=i)


def _check_blocks(check, model, reference, tokens) -> None:
    """Fail on the model's blocks first, where they and not the model's wiring are wrong."""
    x = reference.embed(tokens) + reference.pos_embed(tokens)
    for i, (theirs, ours) in enumerate(zip(model.blocks, reference.blocks, strict=False)):
        got = check.call(theirs, x, what=f"blocks[{i}] (your TransformerBlock)")
        expected = ours(x)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            check.fail(
                f"blocks[{i}], your TransformerBlock, does not return a stream of shape "
                f"{tuple(expected.shape)}: pass its check first."
            )
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            check.fail(
                f"blocks[{i}], your TransformerBlock, computes something else than the "
                "reference block: pass its check first."
            )
        x = expected
