"""Generate each chapter's exercise notebook and solved notebook from one source.

A source is `notebooks/<stem>.md`: markdown, ```python cells, and two directives that pull
code out of `solutions/<chapter>.py`, where every solution is written exactly once:

    ```{exercise} Embed          the learner writes this: a stub in the exercise notebook,
    :difficulty: 1                the reference (collapsed) in the solved notebook; then a
    :importance: 5                check cell and a cell that falls back to the reference
    :minutes: 10                  while the check fails, so later cells still run
    :stub: forward                methods to stub (default: all but __init__)
    A hint, in markdown.
    ```

    ```{given} GPT2_SPLIT_PATTERN  shown as is in both notebooks
    ```

An exercise's hint comes in two levels when a line `:answer:` splits its body: the text
above it (the idea) folds under "Hint", the text below it (the answer) under a second
"Answer", to open after the first. A body without that line is a single hint.

Usage: `python -m course.notebooks build [STEM ...]` writes `exercises/<stem>.ipynb` and
`book/solved/<stem>.ipynb` (executed); `python -m course.notebooks check` fails if any
committed notebook differs from what its source generates. Neither ever overwrites a
notebook whose cells were edited since it was generated: the new version is written
beside it as `<stem>.updated.ipynb` instead.
"""

import argparse
import ast
import hashlib
import importlib
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks"
EXERCISES = ROOT / "exercises"
SOLVED = ROOT / "book" / "solved"
SOLUTIONS = ROOT / "solutions"
STUB = "# Your code here.\nraise NotImplementedError()"
# The kernel as ipykernel installs it and describes itself once started. JupyterLab writes
# both into a notebook it opens, which then shows as modified ("unsaved") if they differ.
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {
    "name": "python",
    "version": platform.python_version(),
    "mimetype": "text/x-python",
    "codemirror_mode": {"name": "ipython", "version": 3},
    "pygments_lexer": "ipython3",
    "nbconvert_exporter": "python",
    "file_extension": ".py",
}


@dataclass
class Block:
    kind: str  # "markdown", "code", "exercise" or "given"
    text: str
    name: str = ""
    options: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


# --- Step 1: parse a source file into blocks -------------------------------------------


def parse(source: str) -> tuple[dict[str, str], list[Block]]:
    """Split a source into its front matter and a list of blocks."""
    front, body = _front_matter(source)
    blocks: list[Block] = []
    markdown: list[str] = []
    lines = iter(body.splitlines())
    for line in lines:
        opening = re.fullmatch(r"```(python|\{exercise\}|\{given\})\s*(\S*)\s*", line)
        if not opening:
            markdown.append(line)
            continue
        _flush_markdown(markdown, blocks)
        content = []
        for inner in lines:
            if inner.rstrip() == "```":
                break
            content.append(inner)
        else:
            raise ValueError(f"unclosed fence: {line}")
        kind = {"python": "code", "{exercise}": "exercise", "{given}": "given"}[opening[1]]
        blocks.append(_block(kind, opening[2], content))
    _flush_markdown(markdown, blocks)
    return front, blocks


def _front_matter(source: str) -> tuple[dict[str, str], str]:
    match = re.match(r"---\n(.*?)\n---\n", source, re.S)
    if not match:
        raise ValueError("a notebook source starts with front matter: ---\\nchapter: NAME\\n---")
    front = dict(line.split(":", 1) for line in match[1].splitlines() if line.strip())
    return {k.strip(): v.strip() for k, v in front.items()}, source[match.end() :]


def _flush_markdown(lines: list[str], blocks: list[Block]) -> None:
    text = "\n".join(lines).strip()
    if text:
        blocks.append(Block("markdown", text))
    lines.clear()


def _block(kind: str, name: str, content: list[str]) -> Block:
    options, tags = {}, []
    while content and (option := re.fullmatch(r"(?::(\w+):|#\| tags:)\s*(.*)", content[0])):
        if option[1]:
            options[option[1]] = option[2].strip()
        else:
            tags += [tag.strip() for tag in option[2].split(",") if tag.strip()]
        content = content[1:]
    return Block(kind, "\n".join(content).strip(), name, options, tags)


# --- Step 2: pull code out of the solution module ---------------------------------------


def solution_source(chapter: str, name: str) -> str:
    """The exact source text of a top-level definition in `solutions/<chapter>.py`."""
    node, lines = _definition(chapter, name)
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[start - 1 : node.end_lineno])


def stub_source(chapter: str, name: str, methods: list[str] | None) -> str:
    """The definition with the bodies of the exercise's functions replaced by a stub."""
    node, lines = _definition(chapter, name)
    if isinstance(node, ast.ClassDef):
        targets = [
            f
            for f in node.body
            if isinstance(f, ast.FunctionDef)
            and (f.name in methods if methods else f.name != "__init__")
        ]
    elif isinstance(node, ast.FunctionDef):
        targets = [node]
    else:
        raise ValueError(f"{name} is neither a class nor a function: use {{given}} for it")
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    out = lines[start - 1 : node.end_lineno]
    # Replace from the last function up, so earlier line numbers stay valid.
    for func in sorted(targets, key=lambda f: f.lineno, reverse=True):
        body = func.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        keep_until = body[0].end_lineno if has_doc else func.body[0].lineno - 1
        indent = " " * body[0].col_offset
        stub = [indent + line for line in STUB.splitlines()]
        out[keep_until - start + 1 : func.end_lineno - start + 1] = stub
    return "\n".join(out)


def _definition(chapter: str, name: str) -> tuple[ast.stmt, list[str]]:
    """Find `name` in the chapter's solution modules (`chapter` may list several: "a, b")."""
    modules = [m.strip() for m in chapter.split(",")]
    for module in modules:
        text = (SOLUTIONS / f"{module}.py").read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if getattr(node, "name", None) == name or name in targets:
                return node, text.splitlines()
    raise ValueError(f"no top-level definition named {name} in solutions/{modules}")


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


# --- Step 3: render blocks as notebook cells --------------------------------------------


def render(front: dict[str, str], blocks: list[Block], solved: bool) -> nbformat.NotebookNode:
    chapter = front["chapter"]
    cells = []
    for block in blocks:
        if block.kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(_links(block.text, solved)))
        elif block.kind == "code":
            cells.append(_code(block.text, block.tags))
        elif block.kind == "given":
            cells.append(_code(solution_source(chapter, block.name), block.tags))
        else:
            cells += _exercise_cells(chapter, block, solved)
    cells.insert(1, nbformat.v4.new_markdown_cell(_banner(front, solved)))
    cells.append(nbformat.v4.new_markdown_cell("## Your progress"))
    modules = ", ".join(f'"{m.strip()}"' for m in chapter.split(","))
    cells.append(_code(f"summary({modules})"))
    for i, cell in enumerate(cells):
        cell["id"] = f"{cell['cell_type'][:2]}-{i:03d}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO}
    nb.metadata["residual_stream"] = {"source": f"notebooks/{front['stem']}.md"}
    nb.metadata["residual_stream"]["cells_sha"] = cells_sha(nb)
    return nb


def _links(text: str, solved: bool) -> str:
    """Sources link to the prose pages as exercises/ sees them (`../book/NN.md`: JupyterLab
    opens it, rooted at the repository by `make lab`); a solved notebook sits in
    book/solved/, one level under those pages."""
    return text.replace("](../book/", "](../") if solved else text


def _banner(front: dict[str, str], solved: bool) -> str:
    stem = front["stem"]
    if solved:
        return (
            f"*These are the chapter's exercises, solved: each solution hides under "
            f"**Show solution**. To do them yourself, open `exercises/{stem}.ipynb` "
            f"in Jupyter.*"
        )
    return (
        "*Run the cells from the top. Each exercise is followed by a check cell: it tells "
        "you exactly what is right or wrong. If you are stuck, the cell after the check "
        "lets the rest of the notebook use the reference solution, so you can go on.*"
    )


def _exercise_cells(chapter: str, block: Block, solved: bool) -> list[nbformat.NotebookNode]:
    name, opts = block.name, block.options
    dots = lambda n: "●" * int(n) + "○" * (5 - int(n))  # noqa: E731
    badge = (
        f"> **Difficulty** {dots(opts['difficulty'])} · **Importance** "
        f"{dots(opts['importance'])} · about {opts['minutes']} minutes"
    )
    hint = hints(block.text)
    if solved:
        code = _code(solution_source(chapter, name), ["hide-input"])
        code.metadata["mystnb"] = {
            "code_prompt_show": "Show solution",
            "code_prompt_hide": "Hide solution",
        }
    else:
        stub = opts.get("stub")
        code = _code(stub_source(chapter, name, stub.split(",") if stub else None))
    carry_on = _code(f"{name} = reference_if_failed({name})", ["remove-cell"] if solved else [])
    return [
        nbformat.v4.new_markdown_cell(f"{badge}\n\n{hint}"),
        code,
        # In the exercise notebook a failing check must not stop "Run All": JupyterLab,
        # Notebook and nbclient run on past a cell tagged raises-exception.
        _code(f"check_{snake_case(name)}({name})", [] if solved else ["raises-exception"]),
        carry_on,
    ]


ANSWER = ":answer:"  # a line on its own: the hint above it, the answer below


def hints(text: str) -> str:
    """An exercise's hint as folded <details>: the idea, then (after `:answer:`) the answer."""
    parts = [part.strip() for part in re.split(rf"^{ANSWER}[ \t]*$", text, flags=re.M)]
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"a hint is an idea, then optionally `{ANSWER}` and the answer: {text!r}")
    labels = ["Hint", "Answer"][: len(parts)]
    fold = "<details><summary>{}</summary>\n\n{}\n\n</details>"
    return "\n\n".join(fold.format(label, part) for label, part in zip(labels, parts, strict=True))


def _code(source: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def cells_sha(nb: nbformat.NotebookNode) -> str:
    """Fingerprint of the cells' sources: it changes exactly when someone edits a cell."""
    text = "\n\x00".join(cell.source for cell in nb.cells)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- Step 4: write, execute, compare ----------------------------------------------------


def generate(stem: str) -> dict[Path, nbformat.NotebookNode]:
    """The two notebooks a source generates, unexecuted, by the path each belongs at."""
    front, blocks = parse((SOURCES / f"{stem}.md").read_text(encoding="utf-8"))
    front["stem"] = stem
    return {
        EXERCISES / f"{stem}.ipynb": render(front, blocks, solved=False),
        SOLVED / f"{stem}.ipynb": render(front, blocks, solved=True),
    }


def edited_by_hand(path: Path) -> bool:
    """True when the cells of a notebook on disk no longer match what was generated."""
    nb = nbformat.read(path, as_version=4)
    return nb.metadata.get("residual_stream", {}).get("cells_sha") != cells_sha(nb)


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    strip = lambda nb: [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]  # noqa: E731
    keys = ["residual_stream", "kernelspec"]
    return strip(a) == strip(b) and all(a.metadata.get(k) == b.metadata.get(k) for k in keys)


def is_check_cell(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.startswith("check_")


def execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in `cwd`, as Run All does: it stops at the first error
    outside a cell tagged raises-exception (nbclient's CellExecutionError)."""
    from nbclient import NotebookClient

    # No timing metadata: it would differ at every run and make fresh notebooks look stale.
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=False,
        # One output per stream: how a kernel splits its prints varies from run to run.
        coalesce_streams=True,
        resources={"metadata": {"path": cwd}},
    )
    client.execute()
    # No widget state either: a static page cannot run widgets, and myst-nb loads their
    # JavaScript from a CDN for any notebook that stores some.
    nb.metadata.pop("widgets", None)
    return nb


def build(stems: list[str], run: bool = True, force: bool = False) -> int:
    for stem in stems:
        for path, nb in generate(stem).items():
            if path.exists():
                current = nbformat.read(path, as_version=4)
                fresh = path.parent == EXERCISES or (_executed(current) and not force)
                if same_cells(current, nb) and fresh:
                    print(f"up to date  {_shown(path)}")
                    continue
                if edited_by_hand(path):
                    path = path.with_suffix(".updated.ipynb")
                    print(
                        f"{path.with_suffix('').with_suffix('.ipynb').name} was edited by hand: "
                        f"left as it is, new version written to {_shown(path)}"
                    )
            if path.parent == SOLVED and run:
                print(f"executing   {_shown(path)}")
                execute(nb, path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            print(f"wrote       {_shown(path)}")
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _executed(nb: nbformat.NotebookNode) -> bool:
    return all(c.get("execution_count") for c in nb.cells if runs_when_stored(c))


def runs_when_stored(cell: nbformat.NotebookNode) -> bool:
    """Code that the stored notebooks execute: all but cells tagged `skip-execution` (nbclient's
    own tag), whose output would differ at every run (timings) or needs a live kernel
    (widgets). A learner's Run All in Jupyter still runs them."""
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.cell_type == "code" and "skip-execution" not in tags


def check(stems: list[str]) -> int:
    stale = []
    for stem in stems:
        for path, nb in generate(stem).items():
            if not path.exists() or not same_cells(nbformat.read(path, as_version=4), nb):
                stale.append(str(_shown(path)))
    for path in stale:
        print(f"stale: {path} (run `make notebooks`)")
    return 1 if stale else 0


def all_stems() -> list[str]:
    return sorted(p.stem for p in SOURCES.glob("*.md") if p.stem[:2].isdigit())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course.notebooks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("stems", nargs="*", help="e.g. 01_embeddings (default: all)")
    parser.add_argument(
        "--no-execute", action="store_true", help="write solved notebooks unexecuted"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-execute solved notebooks even if their cells are unchanged",
    )
    args = parser.parse_args(argv)
    stems = args.stems or all_stems()
    importlib.invalidate_caches()
    if args.command == "check":
        return check(stems)
    return build(stems, run=not args.no_execute, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
