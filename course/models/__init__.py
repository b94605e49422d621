"""The small models the course trains and ships: for each, a loader (its configuration, data and
shipped files) and a trainer (`python -m course.models.train_<model>`); the English corpus."""
