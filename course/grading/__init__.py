"""Grading learners' notebooks (`make grade`), an instructor's gradebook (`make gradebook`), and
chapter 5's reading of the parts a learner wrote in chapters 1 to 4."""
