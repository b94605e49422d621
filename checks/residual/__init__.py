"""Checkers for chapter 5's residual stream (solutions/residual.py).

Models have every parameter random (LayerNorm w and b included, so that an activation taken
before a LayerNorm never equals one taken after it), three layers or two, and come with and
without MLPs (attention-only blocks record no ln2, MLP or resid_mid, as in TransformerLens).
A recorded activation that is wrong is compared with every other activation of the run: if
it equals one, the message says which TransformerLens name it belongs under. Activation
patching (`patch_sweep`) is checked on models of its own, at several hook points.
"""

# The cases and the model builder, which the tests import from here too.
from checks.residual._common import CASES as CASES
from checks.residual._common import NUDGED as NUDGED
from checks.residual._common import SCALE as SCALE
from checks.residual._common import random_model as random_model
from checks.residual.hooks import compare_caches as compare_caches

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.residual.hooks import (
    check_attention_with_hooks,
    check_run_with_hooks,
    check_run_with_cache,
)
from checks.residual.decompose import check_decompose_resid, check_count_stream_vectors
from checks.residual.lens import check_logit_lens, check_direct_logit_attribution
from checks.residual.patch import check_patch_sweep
# isort: on

__all__ = [
    "check_attention_with_hooks",
    "check_run_with_hooks",
    "check_run_with_cache",
    "check_decompose_resid",
    "check_count_stream_vectors",
    "check_logit_lens",
    "check_direct_logit_attribution",
    "check_patch_sweep",
]
