"""The Setup page says what is true of the course, and the book's launch buttons appear
where the repository's address is configured, open the chapter's exercises, and are absent
(without breaking the build, as sphinx-book-theme alone would) where it is not."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from course.book import launch as sphinx_launch
from course.grading import grade

ROOT = Path(__file__).resolve().parent.parent
SETUP = (ROOT / "book" / "setup.md").read_text()
PINS = dict(
    line.split("==", 1)
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
)


def test_colab_installs_the_courses_own_pins():
    (install,) = re.findall(r"^%pip install --quiet (.+)$", SETUP, re.M)
    pins = dict(p.split("==") for p in install.split())
    assert pins and all(PINS[name] == version for name, version in pins.items()), pins
    assert "torch" not in pins  # Colab keeps its own PyTorch
    # The packages the notebooks import beside PyTorch and the standard library.
    sources = "\n".join(p.read_text() for p in (ROOT / "notebooks").glob("*.md"))
    for module, package in [
        ("einops", "einops"),
        ("jaxtyping", "jaxtyping"),
        ("plotly", "plotly"),
        ("regex", "regex"),
        ("transformers", "transformers"),
        ("transformer_lens", "transformer-lens"),
    ]:
        assert re.search(rf"^(import|from) {module}\b", sources, re.M), module
        assert package in pins, package


def test_setup_names_only_make_targets_that_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for target in re.findall(r"`make ([\w-]+)", SETUP):
        assert target in targets, target


def test_setup_states_the_graders_time_limit_and_python():
    assert f"A notebook gets {grade.TIME_LIMIT:g} seconds" in SETUP
    requires = re.search(r'requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert f"Python {requires[1]} or newer" in SETUP
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert f'python-version: "{requires[1]}"' in ci  # "the course's CI runs 3.11"


def test_intro_says_how_to_see_progress():
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "`make grade`" in intro and "{doc}`setup` page" in intro


def theme(url: str, **launch) -> SimpleNamespace:
    options = {
        "repository_url": url,
        "launch_buttons": {"notebook_interface": "jupyterlab", **launch},
    }
    return SimpleNamespace(html_theme_options=options)


def test_launch_buttons_only_where_a_github_repository_is_configured():
    for url in ["", "https://gitlab.com/a/b", "not a url"]:
        config = theme(url, colab_url=sphinx_launch.COLAB, thebe=True)
        sphinx_launch.configure(None, config)
        launch = config.html_theme_options["launch_buttons"]
        assert not any(launch.get(p) for p in sphinx_launch.PROVIDERS), (url, launch)
    config = theme("https://github.com/someone/residual-stream", colab_url="")
    sphinx_launch.configure(None, config)
    assert config.html_theme_options["launch_buttons"]["colab_url"] == sphinx_launch.COLAB
    # The course as shipped leaves the address empty: no buttons.
    shipped = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert shipped["repository"]["url"] == ""
    assert "course.book.launch" in shipped["sphinx"]["extra_extensions"]


def test_the_setup_page_takes_the_clone_and_issue_addresses_from_the_repository_url():
    tokens = set(re.findall(r"\[\[[\w-]+\]\]", SETUP))
    assert tokens == {"[[clone]]", "[[git-url]]", "[[colab-address]]", "[[report]]"}
    assert "OWNER" not in SETUP and "maintainers" not in SETUP

    def filled(url: str) -> str:
        source = [SETUP]
        app = SimpleNamespace(config=theme(url))
        sphinx_launch.fill_repository(app, "book/setup", source)
        assert "[[" not in source[0]
        return source[0]

    mine = filled("https://github.com/someone/residual-stream")
    assert "git clone https://github.com/someone/residual-stream.git residual-stream" in mine
    assert "github/someone/residual-stream/blob/main/exercises/00_toolkit.ipynb" in mine
    assert "(https://github.com/someone/residual-stream/issues)" in mine
    assert "ADDRESS" not in mine and "OWNER" not in mine
    plain = filled("")
    assert "Clone this repository" in plain and "git clone ADDRESS residual-stream" in plain
    assert "github.com" not in plain.split("## In Google Colab")[0]


def test_a_chapters_colab_button_opens_its_exercise_notebook():
    colab = f"{sphinx_launch.COLAB}/github/o/n/blob/main/book/solved/00_toolkit.ipynb"
    binder = "https://mybinder.org/v2/gh/o/n/main?urlpath=lab/tree/book/solved/00_toolkit.ipynb"
    buttons = [{"url": colab}, {"url": binder}]
    context = {"header_buttons": [{"label": "launch-buttons", "buttons": buttons}]}
    app = SimpleNamespace(srcdir=str(ROOT))
    for page in ["book/solved/00_toolkit", "book/00_toolkit"]:
        sphinx_launch.point_at_exercises(app, page, "page.html", context, None)
        assert buttons[0]["url"].endswith("/blob/main/exercises/00_toolkit.ipynb")
        assert buttons[1]["url"] == binder
    assert sphinx_launch.exercise_notebook("book/intro", ROOT) is None


@pytest.mark.slow
def test_a_book_with_a_repository_address_links_chapters_to_colab(tmp_path):
    # A two-page book under the course's own _config.yml, with the address filled in.
    config = (ROOT / "_config.yml").read_text()
    config = config.replace('url: ""', "url: https://github.com/someone/residual-stream")
    (tmp_path / "_config.yml").write_text(config)
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: book/solved/00_toolkit\n"
    )
    (tmp_path / "intro.md").write_text("# Intro\n\nA page without a notebook. [[clone]] now.\n")
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Chapter 0"), nbformat.v4.new_code_cell("1 + 1")]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for folder in ["book/solved", "exercises"]:
        (tmp_path / folder).mkdir(parents=True)
        nbformat.write(nb, tmp_path / folder / "00_toolkit.ipynb")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    build = subprocess.run(
        [str(jupyter_book), "build", str(tmp_path), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    page = (html / "book" / "solved" / "00_toolkit.html").read_text()
    links = re.findall(r'href="(https://colab[^"]+)"', page)
    target = "https://colab.research.google.com/github/someone/residual-stream/blob/main/"
    assert links == [target + "exercises/00_toolkit.ipynb"], links
    intro = (html / "intro.html").read_text()
    assert 'href="https://github.com/someone/residual-stream"' in intro and "[[" not in intro
    assert "colab" not in (html / "intro.html").read_text().lower()
