"""The partly fused model that `make bench` times computes the reference's function."""

import torch

from course.bench import _sdpa_only_transformer
from course.config import TINY
from solutions.transformer import Transformer


def test_sdpa_only_model_gives_the_outputs_and_gradients_of_the_reference():
    torch.manual_seed(0)
    reference = Transformer(TINY)
    with torch.no_grad():
        for p in reference.parameters():  # biases too, so that a misplaced one shows
            p.normal_(std=0.3)
    partly = _sdpa_only_transformer(TINY)
    partly.load_state_dict(reference.state_dict())
    tokens = torch.randint(TINY.d_vocab, (3, 11))
    out_ref, out_partly = reference(tokens), partly(tokens)
    assert torch.allclose(out_partly, out_ref, atol=1e-5)
    out_ref.square().mean().backward()
    out_partly.square().mean().backward()
    for (name, a), b in zip(reference.named_parameters(), partly.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
