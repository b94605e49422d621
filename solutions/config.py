"""One configuration for every module of the course (TransformerLens names)."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    """Hyperparameters of a GPT-2-style decoder. The defaults are GPT-2 small."""

    # Widths.
    d_model: int = 768
    d_head: int = 64
    d_mlp: int = 3072
    d_vocab: int = 50257
    # Counts.
    n_ctx: int = 1024
    n_heads: int = 12
    n_layers: int = 12
    # Initialisation and numerics.
    init_range: float = 0.02
    layer_norm_eps: float = 1e-5
    # While on, modules assert what their inputs promise (a prompt no longer than n_ctx,
    # a last axis of d_model), so a wrong shape fails where it happens, not layers later.
    debug: bool = True

    def but(self, **changes) -> "Config":
        """A copy with some fields changed: `TINY.but(n_ctx=8)`."""
        return replace(self, **changes)


GPT2_SMALL = Config()

# Small enough that a forward pass takes milliseconds on a laptop CPU, with every
# dimension distinct so that a transposed or swapped axis never goes unnoticed.
TINY = Config(d_model=48, d_vocab=101, n_ctx=32, d_head=12, d_mlp=192, n_heads=4, n_layers=2)

# The course model (course/models/train_course_model.py, shipped in course/data/course_model/):
# a small GPT-2 that trains in under 20 minutes on a 2-core CPU and whose float32 weights stay
# under 10 MB. d_vocab matches the course's own BPE on the English corpus.
COURSE_MODEL = Config(
    d_model=128, d_vocab=4096, n_ctx=128, d_head=32, d_mlp=512, n_heads=4, n_layers=4
)
