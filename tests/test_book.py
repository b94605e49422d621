"""The book builds with warnings as errors, and its pages render math and figures offline."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-6000:] + build.stderr[-3000:]
    return out / "_build" / "html"


def chapter_pages(html: Path) -> list[Path]:
    return sorted((html / "book").rglob("*.html"))


@pytest.mark.slow
def test_book_has_a_page_per_chapter_and_solved_notebook(html):
    toc = (ROOT / "_toc.yml").read_text()
    for entry in re.findall(r"file: (\S+)", toc):
        assert (html / f"{entry}.html").exists(), entry


@pytest.mark.slow
def test_pages_load_no_script_from_the_network(html):
    for page in chapter_pages(html):
        remote = re.findall(r'<script[^>]+src="(https?:[^"]+)"', page.read_text())
        assert not remote, f"{page.name} loads {remote}"


@pytest.mark.slow
def test_solutions_hide_under_show_solution(html):
    page = (html / "book" / "solved" / "01_embeddings.html").read_text()
    assert "Show solution" in page


def render(page: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with the network cut."""
    profile = page.parent / ".chromium-profile"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)
    return result.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_math_and_figures_render_offline_in_chromium(html):
    if CHROMIUM is None:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium): "
            "cannot check that math and figures render"
        )
    pages_with_math = pages_with_figures = 0
    for page in chapter_pages(html):
        source = page.read_text()
        math = source.count('class="math notranslate nohighlight"')
        figures = source.count('class="plotly-graph-div"')
        if not (math or figures):
            continue
        dom = render(page)
        assert dom, f"chromium rendered nothing for {page.name}"
        rendered_math = len(re.findall(r'class="MathJax"', dom))
        errors = dom.count('class="MathJax_Error"') + dom.count("Math Processing Error")
        assert not errors, f"{page.name}: MathJax failed on {errors} formulas"
        assert rendered_math >= math, f"{page.name}: {rendered_math} of {math} formulas rendered"
        drawn = len(re.findall(r'class="main-svg"', dom))
        assert drawn >= figures, f"{page.name}: {drawn} of {figures} plotly figures drawn"
        pages_with_math += bool(math)
        pages_with_figures += bool(figures)
    assert pages_with_math and pages_with_figures
