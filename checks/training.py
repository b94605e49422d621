"""Checkers for chapter 6 (solutions/training.py): training. The chapter's exercises add theirs here."""

__all__: list[str] = []
