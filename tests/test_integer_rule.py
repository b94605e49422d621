"""One rule for "an integer" in every checker that asks for a count: a Python or NumPy
integer (or a one-element integer tensor) passes, a float from `/` is named."""

import numpy as np
import pytest
import torch

from checks.attention import check_attention_flops, check_kv_cache_bytes
from checks.gpt2 import check_parameter_count
from checks.mlp import check_moe_flops_saved
from checks.tokenizer import check_bpe_tokenizer
from solutions import attention, gpt2, mlp, tokenizer
from support import assert_accepts, assert_rejects

COUNTS = [
    (check_kv_cache_bytes, attention.kv_cache_bytes, "bytes"),
    (check_attention_flops, attention.attention_flops, "FLOPs"),
    (check_parameter_count, gpt2.parameter_count, "parameter count"),
    (check_moe_flops_saved, mlp.moe_flops_saved, "FLOPs saved"),
]


@pytest.mark.parametrize("checker, reference, what", COUNTS, ids=[c[2] for c in COUNTS])
def test_a_count_passes_as_a_numpy_or_tensor_integer_and_fails_as_a_float(
    checker, reference, what, capsys
):
    def as_numpy(*args):
        return np.int64(reference(*args))

    def as_tensor(*args):
        return torch.tensor(reference(*args))

    def as_float(*args):
        return float(reference(*args))

    assert_accepts(checker, as_numpy, capsys)
    assert_accepts(checker, as_tensor, capsys)
    assert_rejects(checker, as_float, "should be an int", "use //")


def test_encode_may_return_numpy_integers(capsys):
    class NumpyIds(tokenizer.BPETokenizer):
        def encode(self, text):
            return [np.int64(i) for i in super().encode(text)]

    assert_accepts(check_bpe_tokenizer, NumpyIds, capsys)
