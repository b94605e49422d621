import torch

# Reference computations in tests and checkers run on one thread so that float
# reductions happen in the same order on every machine.
torch.set_num_threads(1)
