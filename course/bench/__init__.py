"""`make bench`: the course's timings, one module a section (`python -m course.bench`)."""
