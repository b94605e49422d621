"""Checkers for chapter 3 (solutions/mlp.py): the MLP. The chapter's exercises add theirs here."""

__all__: list[str] = []
