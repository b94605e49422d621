"""What chapter 1's checkers share: a verdict with a hint added, and a text quoted short."""


def _fail_with_hint(check, failure, hint):
    """Fail the case again with a caught verdict's diagnosis and a hint added."""
    check.fail(failure.diagnosis + hint)


def _quoted(text: str, limit: int = 30) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


_REGEX_HINT = (
    "\n  GPT2_SPLIT_PATTERN needs the `regex` package (\\p{L}, \\p{N}): "
    "regex.findall(GPT2_SPLIT_PATTERN, text), not re.findall."
)
