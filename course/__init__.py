"""The course's tools, on top of `solutions/` (the reference) and `checks/` (the checkers).

- `course.notebooks`: the generator of the exercise and solved notebooks.
- `course.display`: what the notebooks show (plotly figures, the attention explorer, the
  neuron browser).
- `course.models`: the small models the course trains and ships, their corpora and loaders.
- `course.grading`: grading learners' notebooks, and an instructor's gradebook.
- `course.bench`: `make bench`, the course's timings.
- `course.book`: the Sphinx extensions and static files of the HTML book.
"""

from pathlib import Path

# What the course's tools write and its chapters read: timings and the shipped models.
DATA = Path(__file__).parent / "data"
