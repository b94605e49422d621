"""The book builds with warnings as errors, and its pages render math and figures offline."""

import functools
import html as html_text
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = (Path(__file__).parent / "layout_probe.js").read_text()
PHONE = (390, 844)  # a phone's screen, in CSS pixels
DESKTOP = (1280, 900)  # a laptop's browser window
# Headless Chromium keeps its window at least 500 px wide: a phone's screen is a frame.
PHONE_FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="border:0;width:{width}px;height:{height}px"></iframe></body></html>"""

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium): "
    "cannot check that math and figures render",
)


# Inside \text{...} TeX's escapes are not read: MathJax shows `\_` there as a backslash and an
# underscore. A plain `_` is what shows as an underscore in text.
ESCAPED_IN_TEXT = re.compile(r"\\(?:text|textrm|textit|textsf|texttt|mbox)\{[^{}]*\\_")


def test_no_formula_escapes_an_underscore_inside_text():
    sources = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "notebooks").glob("*.md"))
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in sources
        for match in ESCAPED_IN_TEXT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)


def test_chapter_5s_stacked_chart_gives_each_part_its_own_colour():
    # Plotly's 10 default colours drew two parts alike once there were more than ten.
    nb = json.loads((ROOT / "book" / "solved" / "05_residual_stream.ipynb").read_text())
    figures = [
        output["data"]["application/vnd.plotly.v1+json"]
        for cell in nb["cells"]
        for output in cell.get("outputs", [])
        if "application/vnd.plotly.v1+json" in output.get("data", {})
    ]
    charts = [f for f in figures if f.get("layout", {}).get("barmode") == "stack"]
    assert len(charts) == 1
    traces = [trace for trace in charts[0]["data"] if trace.get("type") == "bar"]
    colors = [trace.get("marker", {}).get("color") for trace in traces]
    # The course model's parts: 2 embeddings, and per layer 4 heads, b_O and the MLP.
    assert len(traces) == 2 + 4 * 6 and None not in colors, colors
    names = [trace["name"] for trace in traces]
    assert len(set(colors)) == len(colors), dict(zip(names, colors, strict=True))


def test_part_colors_give_every_part_of_a_stream_its_own_colour():
    from course.display.plotting import part_colors

    labels = ["embed", "pos_embed"]
    for layer in range(4):  # the course model: 4 layers of 4 heads
        labels += [f"L{layer}H{h}" for h in range(4)] + [f"L{layer} b_O", f"L{layer} MLP"]
    colors = part_colors([*labels, "bias"])
    assert len(set(colors)) == len(colors) == len(labels) + 1
    with pytest.raises(ValueError, match="L0 attn"):
        part_colors(["L0 attn"])


def test_names_in_a_table_break_after_their_dots_only():
    from docutils.core import publish_doctree
    from docutils.nodes import literal, raw

    from course.book.names import break_names_at_dots

    doctree = publish_doctree(
        "``outside.a.table``\n\n"
        "+-------------------------------+------------+\n"
        "| ``blocks.{i}.hook_resid_pre`` | ``x[...]`` |\n"
        "+-------------------------------+------------+\n"
    )
    break_names_at_dots(doctree)
    outside, name, ellipsis = doctree.findall(literal)
    assert [str(n) for n in outside.children] == ["outside.a.table"]
    pieces = [n.astext() if isinstance(n, raw) else str(n) for n in name.children]
    assert pieces == ["blocks.", "<wbr>", "{i}.", "<wbr>", "hook_resid_pre"]
    assert [str(n) for n in ellipsis.children] == ["x[...]"]


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


def all_pages(html: Path) -> list[Path]:
    """Every page a reader can open (not the files under _static/ or _sources/)."""
    return sorted(
        p for p in html.rglob("*.html") if not p.relative_to(html).parts[0].startswith("_")
    )


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
def test_no_page_runs_an_inline_script_twice(html):
    # A repeated `const` declaration throws ("has already been declared") in the console.
    for page in all_pages(html):
        scripts = re.findall(r"<script>(.+?)</script>", page.read_text(encoding="utf-8"), re.S)
        repeated = {body[:60] for body in scripts if scripts.count(body) > 1}
        assert not repeated, f"{page.relative_to(html)} runs these twice: {sorted(repeated)}"


@pytest.mark.slow
def test_the_setup_page_speaks_plainly_of_an_unset_repository_address(html):
    page = (html / "book" / "setup.html").read_text(encoding="utf-8")
    assert "[[" not in page and "Clone this repository" in page
    assert "git clone ADDRESS residual-stream" in re.sub(r"<[^>]+>", "", page)


def test_solutions_hide_under_show_solution(html):
    page = (html / "book" / "solved" / "01_embeddings.html").read_text()
    assert "Show solution" in page


def chromium(url: str, profile: Path, *flags: str) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with the network cut."""
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
            # Every host name fails to resolve: the page can reach only 127.0.0.1 (the
            # test's server) or files on disk.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=30000",
            *flags,
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)
    return result.stdout


def render(page: Path) -> str:
    return chromium(page.as_uri(), page.parent / ".chromium-profile")


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_math_and_figures_render_offline_in_chromium(html):
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
        # MathJax 2 writes a formula's text runs as span.mtext (and <mtext> in the MathML it
        # hides for screen readers): none may show a TeX escape.
        escaped = re.findall(r'(?:class="mtext"[^>]*|<mtext[^>]*)>([^<]*\\_[^<]*)<', dom)
        assert not escaped, f"{page.name}: a formula shows a backslash before _: {escaped}"
        drawn = len(re.findall(r'class="main-svg"', dom))
        assert drawn >= figures, f"{page.name}: {drawn} of {figures} plotly figures drawn"
        pages_with_math += bool(math)
        pages_with_figures += bool(figures)
    assert pages_with_math and pages_with_figures


class BookServer(http.server.ThreadingHTTPServer):
    """Serves the built book on 127.0.0.1, logging every request and its status, and
    adds tests/layout_probe.js at the top of every page it serves. `/phone?PAGE` shows
    PAGE in a frame the size of a phone's screen."""

    def __init__(self, root: Path):
        self.root = root
        self.log: list[tuple[str, int]] = []
        super().__init__(("127.0.0.1", 0), functools.partial(self.Handler, directory=root))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            path = Path(self.translate_path(self.path))
            if url.path == "/phone":
                width, height = PHONE
                self.send_page(PHONE_FRAME.format(src=url.query, width=width, height=height))
            elif path.suffix == ".html" and path.is_file():
                text = path.read_text(encoding="utf-8")
                self.send_page(text.replace("<head>", f"<head><script>{PROBE}</script>", 1))
            else:
                super().do_GET()

        def send_page(self, text: str) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_request(self, code="-", size="-"):
            self.server.log.append((self.path, int(code)))

        def log_message(self, format, *args):
            pass


@pytest.fixture(scope="module")
def server(html):
    book = BookServer(html)
    thread = threading.Thread(target=book.serve_forever, daemon=True)
    thread.start()
    yield book
    book.shutdown()
    book.server_close()


def visit(server: BookServer, page: Path, phone: bool = False) -> tuple[dict, list]:
    """Load `page` through the server, on a phone or in a desktop window: the probe's report
    and the requests it made."""
    server.log.clear()
    path = "/" + page.relative_to(server.root).as_posix()
    url = server.origin + (f"/phone?{path}" if phone else path)
    size = f"--window-size={DESKTOP[0]},{DESKTOP[1]}"
    dom = chromium(url, server.root.parent / ".chromium-profile", "--hide-scrollbars", size)
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    assert found, f"{page.name}: never finished loading (and typesetting) in chromium"
    return json.loads(html_text.unescape(found.group(1))), list(server.log)


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_every_page_finds_every_file_it_asks_for_in_the_book(html, server):
    for page in all_pages(html):
        report, requests = visit(server, page)
        # A page that declares no icon gets the browser asking for /favicon.ico on its own.
        icon = re.search(r'rel="(shortcut )?icon"', page.read_text())
        missing = [
            path
            for path, status in requests
            if status >= 400 and (icon or urlsplit(path).path != "/favicon.ico")
        ]
        name = page.relative_to(html).as_posix()
        assert not missing, f"{name} asks for files the book lacks: {missing}"
        outside = [url for url in report["resources"] if not url.startswith(server.origin + "/")]
        assert not outside, f"{name} asks for files outside the book: {outside}"


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("phone", [True, False], ids=["phone", "desktop"])
def test_outputs_wrap_equations_scroll_and_figures_fit(html, server, phone):
    width = PHONE[0] if phone else DESKTOP[0]
    figures = equations = 0
    for page in chapter_pages(html):
        source = page.read_text()
        if not any(
            f'class="{what}' in source
            for what in ["plotly-graph-div", "math notranslate", "cell_output"]
        ):
            continue
        report, _ = visit(server, page, phone=phone)
        name = page.relative_to(html).as_posix()
        cut = [f"{o['content']} px in {o['width']} px: {o['text']!r}" for o in report["outputs"]]
        assert not cut, f"{name}: outputs cut at the column's edge:\n" + "\n".join(cut)
        viewport = report["viewport"]
        assert viewport <= width, f"{name}: laid out {viewport} px wide on a {width} px screen"
        assert report["pageWidth"] <= viewport, (
            f"{name}: the page is {report['pageWidth']} px wide on a {viewport} px screen"
        )
        for figure in report["figures"]:
            assert figure["drawn"], f"{name}: figure {figure['id']} not drawn"
            assert 0 <= figure["left"] and figure["right"] <= viewport, (
                f"{name}: figure {figure['id']} spans {figure['left']:.0f}-"
                f"{figure['right']:.0f} px on a {viewport} px screen"
            )
        for equation in report["equations"]:
            assert equation["rendered"], f"{name}: not rendered: {equation['tex']}"
            assert equation["left"] >= -1 and equation["right"] <= viewport + 1, (
                f"{name}: equation box {equation['left']:.0f}-{equation['right']:.0f} px "
                f"on a {viewport} px screen: {equation['tex']}"
            )
            assert equation["start"] >= -1 and equation["reach"] >= equation["width"] - 1, (
                f"{name}: {equation['width']:.0f} px equation shows {equation['shown']:.0f} px "
                f"and cannot scroll: {equation['tex']}"
            )
        figures += len(report["figures"])
        equations += len(report["equations"])
    assert figures and equations
