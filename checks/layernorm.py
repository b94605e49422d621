"""Checkers for chapter 4 (solutions/layernorm.py): LayerNorm. The chapter's exercises add theirs here."""

__all__: list[str] = []
