"""Shared helpers of the Residual Stream course.

- `course.config`: the `Config` dataclass and its presets, used by every chapter.
- `course.corpus`: the offline text corpus.
- `course.plotting`: plotly figures that render in live notebooks and in the static book.
- `course.notebooks`: the generator that turns `notebooks/*.md` into exercise and solved notebooks.
"""

from course.config import GPT2_SMALL, TINY, Config

__all__ = ["Config", "GPT2_SMALL", "TINY"]
