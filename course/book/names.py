"""Sphinx extension: a name in a table breaks after its dots, never inside a word.

A table's narrow column cut `blocks.{i}.hook_resid_pre` wherever the line ran out
("hook_resid_p" / "re"): the book's stylesheet lets inline code break anywhere, so that one
long call cannot widen a page. In a table each dot of inline code is followed by a <wbr>, a
place where a line may break, and course/book/static/course.css lets a table's code break
there and at its spaces only. A name copied from the page copies no <wbr>.
"""

import re

from docutils import nodes

# After a dot between the parts of a name ("blocks.{i}.attn"), not in "..." nor at an end.
AFTER_A_DOT = re.compile(r"(?<=[\w}]\.)(?=[\w{])")


def break_names_at_dots(doctree: nodes.Node) -> None:
    """Put a <wbr> (HTML only) after each dot of the inline code inside every table."""
    for table in doctree.findall(nodes.table):
        for literal in table.findall(nodes.literal):
            for text in list(literal.findall(nodes.Text)):
                pieces = AFTER_A_DOT.split(str(text))
                if len(pieces) == 1:
                    continue
                new: list[nodes.Node] = []
                for piece in pieces:
                    new += [nodes.Text(piece), nodes.raw("", "<wbr>", format="html")]
                text.parent.replace(text, new[:-1])


def _on_doctree_resolved(app, doctree, docname) -> None:
    break_names_at_dots(doctree)


def setup(app):
    app.connect("doctree-resolved", _on_doctree_resolved)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
