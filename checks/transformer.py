"""Checkers for chapter 5 (solutions/transformer.py): the whole transformer. The chapter's exercises add theirs here."""

__all__: list[str] = []
