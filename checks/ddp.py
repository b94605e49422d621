"""Chapter 6b's data-parallel step (solutions/ddp.py) has no checker: it needs several
processes. tests/test_ddp.py launches it with torchrun and compares it with one process."""

__all__: list[str] = []
