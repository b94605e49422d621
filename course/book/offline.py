"""Sphinx extension: serve MathJax and plotly.js from the installed packages, not from CDNs.

The built book then renders math and figures when opened from disk with no network.
MathJax 2 comes from the `jupyter-server-mathjax` package, plotly.js from `plotly`.
It also adds the book's own stylesheet and script (`course/book/static/`), which fit wide
equations and figures to a phone's screen.
"""

import shutil
from pathlib import Path

import jupyter_server_mathjax
import plotly

MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC = Path(__file__).parent / "static"

# The combined configuration below also starts MathJax's NativeMML output, which is never
# used to draw here (Chromium gets HTML-CSS) but still declares @font-face rules for
# MathJax's TeX fonts. jupyter-server-mathjax ships only the STIX-Web fonts, and the hidden
# MathML that MathJax writes for screen readers (\mathbb gives mathvariant="double-struck")
# matched those rules, so the browser asked for fonts/HTML-CSS/TeX/otf/*.otf: files not
# found. Dropping the rules before NativeMML installs its styles leaves the browser nothing
# to fetch but files that exist; the hidden MathML falls back to the page's own fonts.
MATHJAX_NO_TEX_FONTS = """\
MathJax.Hub.Register.StartupHook("NativeMML Jax Startup", function () {
  var styles = MathJax.OutputJax.NativeMML.config.styles;
  for (var rule in styles) if (rule.indexOf("@font-face") === 0) delete styles[rule];
});"""


def _use_local_mathjax(app, config) -> None:
    # The combined configuration file is the one jupyter-server-mathjax ships whole;
    # it renders with HTML-CSS output and the STIX-Web fonts beside it.
    config.mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
    # Sphinx 7 writes MathJax 3 configuration by default; MathJax 2 reads its own.
    config.mathjax3_config = None
    config.mathjax2_config = {
        "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
        # myst marks pages tex2jax_ignore and math elements "math": process only those.
        "tex2jax": {
            "processClass": "tex2jax_process|mathjax_process|math|output_area",
            "processEscapes": True,
        },
        "messageStyle": "none",
    }
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def _copy_assets(app, exception) -> None:
    if exception or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    shutil.copytree(
        MATHJAX,
        static / "mathjax",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.py"),
    )
    shutil.copy2(PLOTLY_JS, static / "plotly.min.js")


def _one_of_each_script(app, pagename, templatename, context, doctree):
    """Drop repeated inline scripts. Sphinx keeps an inline script added once the builder
    exists twice (in its registry, with no file name, and in the builder, with the file name
    ""), so sphinx-thebe's `const THEBE_JS_URL = ...` ran twice, and the second declaration
    threw in every page's console."""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        name = getattr(script, "filename", script) or ""
        key = (str(name), str(getattr(script, "attributes", "")))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    app.connect("html-page-context", _one_of_each_script, priority=900)
    app.add_js_file("plotly.min.js", priority=100)
    app.add_js_file(None, type="text/x-mathjax-config", body=MATHJAX_NO_TEX_FONTS)
    app.add_js_file("course.js")
    app.add_css_file("course.css")
    app.connect("build-finished", _copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


class PlotlyJsonRenderer:
    """myst-nb mime plugin: plotly's JSON output is drawn by its `text/html` twin.

    `course.display.plotting.show` emits both. Without this plugin myst-nb warns that it cannot
    render the JSON (and a build with warnings as errors fails); with it, the JSON is
    skipped on purpose while every other unknown mime type still warns.
    """

    mime_priority_overrides = [("*", "application/vnd.plotly.v1+json", None)]

    @staticmethod
    def handle_mime(renderer, data, inline):
        return [] if data.mime_type == "application/vnd.plotly.v1+json" else None
