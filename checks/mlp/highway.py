"""Chapter 3's checker of the highway block."""

import torch
import torch.nn.functional as F

from checks._configs import MLP_NOT_4X
from checks._core import exercise, plural, randomize, seeded
from checks.mlp._common import cfg_name
from solutions import mlp as ref
from solutions.config import TINY


@exercise(ref.Highway)
def check_highway(check, Highway):
    for i, (cfg, batch, posn) in enumerate([(TINY, 1, 1), (TINY, 2, 5), (MLP_NOT_4X, 3, 4)]):
        with check.case(f"{cfg_name(cfg)}, batch {batch}, {plural(posn, 'position')}"):
            reference = randomize(ref.Highway(cfg), seed=90 + i, scale=0.3)
            block = check.build(Highway, cfg)
            check.load_weights(block, reference)
            x = torch.randn(batch, posn, cfg.d_model, generator=seeded(100 + i))
            with torch.no_grad():
                H, T = reference.transform(x), reference.gate(x)
                expected = reference(x)
                mistakes = {
                    "swapped the gate: H·(1-T) + x·T": H * (1 - T) + x * T,
                    "added x without the carry gate (1 - T)": H * T + x,
                    "dropped the carry term x·(1-T)": H * T,
                    "used the exact GELU in the transform: the course's H is gelu_new": (
                        F.gelu(x @ reference.W_H + reference.b_H) * T + x * (1 - T)
                    ),
                    "forgot the bias b_H in the transform": (
                        ref.gelu_new(x @ reference.W_H) * T + x * (1 - T)
                    ),
                }
                T_no_b = torch.sigmoid(x @ reference.W_T)
                mistakes["forgot the bias b_T in the gate"] = H * T_no_b + x * (1 - T_no_b)
            got = check.call(block, x, what="Highway.forward")
            check.tensor(got, expected, what="Highway output", mistakes=mistakes)
            if i == 1:  # and it trains: the transform's and the gate's weights get gradients
                check.gradients(block, reference, x, what="Highway", seed=i)
    for gate, b_T in [("closed (T = 0): the identity", -1e4), ("open (T = 1): the transform", 1e4)]:
        with check.case(f"the gate {gate}"):
            reference = randomize(ref.Highway(TINY), seed=110, scale=0.3)
            with torch.no_grad():
                reference.b_T.fill_(b_T)
            block = check.build(Highway, TINY)
            check.load_weights(block, reference)
            x = torch.randn(2, 3, TINY.d_model, generator=seeded(111))
            with torch.no_grad():
                expected = x if b_T < 0 else reference.transform(x)
            got = check.call(block, x, what="Highway.forward")
            check.tensor(got, expected, what="Highway output")
