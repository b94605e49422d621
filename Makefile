# One front door: `make book`, `make lab`, `make grade`, `make gradebook`, `make test`,
# `make notebooks`, `make bench`, `make corpus`, `make course-model`, `make circuits`,
# `make text-model`, `make scaling-law`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv book lab grade gradebook test notebooks bench corpus course-model circuits text-model scaling-law lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# The HTML book in _build/html, every notebook executed; warnings are errors.
book: venv
	$(BIN)/jupyter-book build . -W --keep-going

# JupyterLab on the exercise notebooks, with the course's kernel and packages. As root (a
# container, many cloud machines) Jupyter refuses to start without --allow-root; `make lab
# LAB_ARGS="--port 8889 --no-browser"` passes any other option on.
LAB_ARGS ?=
LAB_USER_ID ?= $(shell id -u)
lab: venv
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/exercises $(if $(filter 0,$(LAB_USER_ID)),--allow-root) $(LAB_ARGS)

# Run a copy of every exercise notebook and show, chapter by chapter, which exercises pass.
# `make grade GRADE_ARGS="--markdown summary.md"` also writes the tables in Markdown (the
# learners' GitHub workflow puts them in its job summary). Under CI (which sets CI) or with
# STRICT=1 it fails until every exercise passes; at a terminal unfinished work is no error.
STRICT ?= $(if $(CI),1)
grade: venv
	$(BIN)/python -m course.grading.grade exercises $(if $(STRICT),,--unfinished-ok) $(GRADE_ARGS)

# An instructor's gradebook over a folder of submissions, one folder or notebook per learner:
# `make gradebook SUBMISSIONS=path/to/class` writes gradebook/gradebook.csv and .json.
GRADEBOOK ?= gradebook
gradebook: venv
	$(BIN)/python -m course.grading.gradebook "$(SUBMISSIONS)" --out "$(GRADEBOOK)" $(GRADE_ARGS)

# Lint, checker tests, generated-notebook tests, the book build, the browser test, and
# nbval (strict) over the solved notebooks. This is what .ci/run runs.
# nbval runs a second time on PyTorch's portable CPU kernels and one thread: they change the
# last bits of floats as another machine would, so an output that is not portable fails here.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider
test: venv lint
	$(BIN)/python -m pytest tests book/solved $(NBVAL)
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/python -m pytest book/solved $(NBVAL)

# Regenerate exercises/ and book/solved/ from notebooks/*.md and solutions/.
notebooks: venv
	$(BIN)/python -m course.notebooks build

# How long each checker takes on the reference solution, and chapter 1's two BPE trainers
# on the whole corpus. `make bench BENCH_ARGS=--record` also rewrites
# course/data/bpe_train_times.json, the figures chapter 1 quotes.
bench: venv
	$(BIN)/python -m course.bench $(BENCH_ARGS)

# The English corpus the course model learns from, built into course/data/english/ (ignored by
# git: the repository lists the books in course/data/english_books.json, never holds their
# text). `make corpus BOOKS=DIR` cleans the books' plain-text files in DIR (default
# ../shared/data/english-src, where it exists), after checking each file's SHA-256 against the
# list. `make corpus DOWNLOAD=1`, the only target that uses the network, first fetches the
# missing books from gutenberg.org into english-src/ (ignored), keeping only files that match.
BOOKS ?= $(wildcard ../shared/data/english-src)
DOWNLOADS ?= english-src
corpus: venv
ifeq ($(DOWNLOAD),1)
	$(BIN)/python -m course.models.build_corpus --download "$(DOWNLOADS)"
else
	@test -n "$(BOOKS)" || { echo "make corpus: no folder of books; pass BOOKS=DIR, or DOWNLOAD=1 to fetch them from gutenberg.org" >&2; exit 2; }
	$(BIN)/python -m course.models.build_corpus "$(BOOKS)"
endif

# Retrain the course model from scratch (at most 20 minutes on a 2-core CPU; a GPU is used
# when there is one) and rewrite course/data/course_model/.
course-model: venv
	$(BIN)/python -m course.models.train_course_model

# Retrain chapter 5's two attention-only models (under two minutes on a 2-core CPU) and
# rewrite course/data/circuits/.
circuits: venv
	$(BIN)/python -m course.models.train_circuits

# Retrain chapter 7's byte-level text model (a few minutes on one CPU thread) and rewrite
# course/data/text_model/.
text-model: venv
	$(BIN)/python -m course.models.train_text_model

# Retrain chapter 6's scaling-law sweep, 12 small models at three compute budgets (under 10
# minutes on one CPU thread), and rewrite course/data/scaling_law/.
scaling-law: venv
	$(BIN)/python -m course.models.train_scaling_law

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf _build
