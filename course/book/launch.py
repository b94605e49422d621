"""Sphinx extension: a Colab button on each chapter's pages once the repository is known.

sphinx-book-theme draws a page's launch buttons from `repository.url` in _config.yml. With
that url empty and a `launch_buttons.colab_url` set, sphinx-book-theme 1.3 stops the build
(it unpacks the missing repository as a tuple: TypeError). So this extension sets
`colab_url` where `repository.url` names a GitHub repository and removes every launch
provider where it does not: a fork that fills in its url gets the buttons, the book as
shipped (url "") gets none.

A launch button opens the page's own source: on a chapter that is the prose page
(`book/NN_*.md`, which Colab cannot open) or the solved notebook (`book/solved/NN_*.ipynb`,
the answers). Both buttons are pointed at the chapter's exercise notebook instead.

The same address fills in the pages' `[[clone]]`, `[[git-url]]`, `[[colab-address]]`
and `[[report]]`: the repository's own words where it is set, plain ones ("clone this
repository") where it is not.
"""

import re
from pathlib import Path

COLAB = "https://colab.research.google.com"
TOOLKIT = "exercises/00_toolkit.ipynb"
PROVIDERS = ("colab_url", "binderhub_url", "jupyterhub_url", "deepnote_url", "thebe")


def github_repository(url: str) -> str | None:
    """`owner/name` of a GitHub repository's address, or None."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url.strip())
    return f"{match[1]}/{match[2]}" if match else None


def configure(app, config) -> None:
    options = config.html_theme_options
    launch = dict(options.get("launch_buttons") or {})
    if github_repository(options.get("repository_url") or ""):
        launch["colab_url"] = launch.get("colab_url") or COLAB
    else:
        for provider in PROVIDERS:
            launch.pop(provider, None)
    options["launch_buttons"] = launch


def exercise_notebook(pagename: str, root: Path) -> str | None:
    """The exercise notebook of the chapter a page belongs to, relative to the repository."""
    stem = pagename.rsplit("/", 1)[-1]
    notebook = Path("exercises") / f"{stem}.ipynb"
    return notebook.as_posix() if (root / notebook).exists() else None


def point_at_exercises(app, pagename, templatename, context, doctree) -> None:
    notebook = exercise_notebook(pagename, Path(app.srcdir))
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons" or not notebook:
            continue
        for button in group["buttons"]:
            if button.get("url", "").startswith(COLAB):
                button["url"] = re.sub(r"(/blob/[^/]+/).*$", rf"\g<1>{notebook}", button["url"])


def repository_words(url: str) -> dict[str, str]:
    """What each `[[...]]` of a page says, for the repository at `url` (or none)."""
    repo = github_repository(url)
    if repo:
        home = f"https://github.com/{repo}"
        return {
            "[[clone]]": f"Clone the course from [{home}]({home}), or your fork of it,",
            "[[git-url]]": f"{home}.git",
            "[[colab-address]]": (
                f"The address works too:\n`{COLAB}/github/{repo}/blob/main/{TOOLKIT}`."
            ),
            "[[report]]": f"report it [on the course's issue tracker]({home}/issues)",
        }
    return {
        "[[clone]]": (
            "Clone this repository, the course's or your fork of it (`ADDRESS` below stands "
            "for its address, as `git clone` takes it),"
        ),
        "[[git-url]]": "ADDRESS",
        "[[colab-address]]": (
            "The address pattern works too, with the repository's path on GitHub for "
            f"`OWNER/NAME`:\n`{COLAB}/github/OWNER/NAME/blob/main/{TOOLKIT}`."
        ),
        "[[report]]": "report it on the issue tracker of the repository you cloned",
    }


def fill_repository(app, docname: str, source: list[str]) -> None:
    for token, words in repository_words(
        app.config.html_theme_options.get("repository_url") or ""
    ).items():
        source[0] = source[0].replace(token, words)


def setup(app):
    app.connect("config-inited", configure)
    app.connect("source-read", fill_repository)
    # After sphinx-book-theme's add_launch_buttons (priority 501) has drawn the buttons.
    app.connect("html-page-context", point_at_exercises, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
