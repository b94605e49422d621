"""The configs the checkers share besides TINY, each named for what is odd about it.

TINY (solutions/config.py) is regular, as GPT-2 is: n_heads · d_head = d_model and
d_mlp = 4 · d_model. Code that reads one size where another belongs gives the right answer
there. Each config here breaks one of those equalities, so that such a slip gives a wrong value
(or a wrong shape) that a check rejects.
"""

from solutions.config import TINY, Config

# Chapter 2: TINY with 3 heads of d_head 8, so that n_heads · d_head = 24 is half of d_model
# (48) and d_head is not d_model // n_heads (16): sqrt(d_model) in place of sqrt(d_head), or
# heads reshaped out of d_model, is a wrong value.
NARROW_HEADS = TINY.but(n_heads=3, d_head=8, n_ctx=16)

# Chapter 6: NARROW_HEADS with d_mlp 100, not 4 · d_model: a parameter or FLOP count that
# assumes either equality is off.
NARROW_HEADS_MLP_100 = NARROW_HEADS.but(d_mlp=100)

# Chapter 3 (the MLP and its neurons): d_mlp 36 is neither 4 · d_model (80) nor d_model (20),
# so an MLP width computed from d_model shows; the heads are regular (4 · 5 = 20).
MLP_NOT_4X = Config(d_model=20, d_vocab=37, n_ctx=16, d_head=5, d_mlp=36, n_heads=4, n_layers=3)

# Chapter 4: a second d_model (5, unlike every other size of TINY) and layer_norm_eps 1e-3,
# a hundred times the default: an eps or a width written in by hand shows.
SMALL_D_MODEL_LARGE_EPS = TINY.but(d_model=5, layer_norm_eps=1e-3)

# Chapter 5's residual stream: 3 heads of 4 in d_model 20, so d_head is not d_model // n_heads
# (6) and n_heads · d_head (12) is not d_model; d_mlp 28 is not 4 · d_model. A size computed
# from d_model where the config has its own shows; three layers tell the layers apart.
UNEVEN_HEADS = Config(d_model=20, d_vocab=37, n_ctx=16, d_head=4, d_mlp=28, n_heads=3, n_layers=3)

# Chapter 5's circuits: 3 heads of 5 in d_model 20 (d_head is not d_model // n_heads, and
# n_heads · d_head is 15), with a smaller vocabulary and context than UNEVEN_HEADS, which keep
# the [d_vocab, d_vocab] circuits and the [posn, posn] patterns small. The models there are
# attention-only: d_mlp goes unused.
UNEVEN_HEADS_SMALL_VOCAB = Config(
    d_model=20, d_vocab=17, n_ctx=12, d_head=5, d_mlp=40, n_heads=3, n_layers=2
)

# Chapter 5's assembly: heads d_model // n_heads wide (6), as a model built by splitting
# d_model would have them, yet 3 of them fill only 18 of d_model's 20; d_mlp 28 is not
# 4 · d_model, and three layers show blocks applied in the wrong order.
HEADS_SHORT_OF_D_MODEL = Config(
    d_model=20, d_vocab=37, n_ctx=16, d_head=6, d_mlp=28, n_heads=3, n_layers=3
)
