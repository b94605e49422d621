"""The model parts a learner wrote in chapters 1-4, read from their exercise notebooks.

`learner_parts()` reads each chapter's notebook from a folder (the current one: a notebook
runs in its own folder, so `exercises/` for a learner and `book/solved/` for the book),
executes the definitions of its code cells (imports, functions, classes and constants,
nothing else: no figures, no training, no checks), checks each part silently with its
checker, and hands back the learner's class where it passes and the reference where it
does not. The notebooks are only read, never written.

Where a part calls another exercise of its chapter (the learner's Attention may call their
`attention_scores`), that one is checked first and replaced by the reference if it fails,
as the chapter's own notebook did after its check.

`learner_model()` adds chapter 5's `TransformerBlock` and `Transformer`, built of those parts
(chapter 7 proves that model GPT-2): the learner's where they pass their checks, else the
reference's code, still built of the parts chosen before it.
"""

import ast
import contextlib
import importlib
import inspect
import io
import json
import types
from pathlib import Path

from checks import CheckFailed, NotStarted
from checks._core import _EXERCISES

# Each part of the model, and the chapter notebook in which the learner wrote it.
PARTS = {
    "Embed": "01_embeddings",
    "PosEmbed": "01_embeddings",
    "Unembed": "01_embeddings",
    "Attention": "02_attention",
    "MLP": "03_mlp",
    "LayerNorm": "04_layernorm",
}
CHAPTERS = ("embeddings", "attention", "mlp", "layernorm")


# Chapter 5's assembly of those parts, and the notebook in which the learner wrote it.
ASSEMBLY = {"TransformerBlock": "05_residual_stream", "Transformer": "05_residual_stream"}


def learner_parts(folder: Path | str | None = None, quiet: bool = False) -> dict[str, type]:
    """Each part by name: the learner's class where it passes its check, else the reference.
    Prints a table (part, whose, why) unless `quiet`."""
    return _choose(PARTS, CHAPTERS, folder, quiet)


def learner_model(folder: Path | str | None = None, quiet: bool = False) -> dict[str, type]:
    """learner_parts, and chapter 5's TransformerBlock and Transformer built of them: the
    learner's where they pass their checks, else the reference's code reading the parts chosen
    before it. Prints one table of all of them unless `quiet`."""
    return _choose({**PARTS, **ASSEMBLY}, (*CHAPTERS, "transformer"), folder, quiet)


def _choose(parts: dict, chapters: tuple, folder: Path | str | None, quiet: bool) -> dict:
    folder = Path.cwd() if folder is None else Path(folder)
    for chapter in chapters:  # importing a chapter's checks module registers its checkers
        importlib.import_module(f"checks.{chapter}")
    exercises = {ex.name: ex for chapter in chapters for ex in _EXERCISES[chapter]}
    namespaces: dict[str, dict | str] = {}
    chosen, rows = {}, []
    for part, stem in parts.items():
        if stem not in namespaces:
            namespaces[stem] = _definitions(folder / f"{stem}.ipynb")
        namespace = namespaces[stem]
        reference = exercises[part].reference
        if part in ASSEMBLY:  # built of the parts chosen so far, the learner's or the reference
            reference = _built_of(reference, chosen)
            if not isinstance(namespace, str):
                namespace.update(chosen)  # as chapter 5's notebook does with learner_parts()
        if isinstance(namespace, str):
            chosen[part], why = reference, namespace
        elif not _defined_there(namespace.get(part), namespace):
            chosen[part], why = reference, f"not defined in {stem}.ipynb"
        else:
            _resolve_dependencies(namespace[part], namespace, exercises, seen={part})
            passed, why = _silent_check(exercises[part], namespace[part])
            chosen[part] = namespace[part] if passed else reference
        rows.append((part, "yours" if chosen[part] is not reference else "reference", why))
    if not quiet:
        width = max(len(part) for part in parts)
        for part, whose, why in rows:
            print(f"{part:<{width}}  {whose:<9}  {why}")
    return chosen


def _built_of(reference: type, chosen: dict[str, type]) -> type:
    """The reference class, its methods reading the chosen classes in place of the reference's
    own (Attention, LayerNorm, TransformerBlock, ...): a subclass, so `super()` still works."""
    module = vars(importlib.import_module(reference.__module__))
    globals_ = {**module, **chosen}
    methods = {}
    for name, f in vars(reference).items():
        if isinstance(f, types.FunctionType):
            f = inspect.unwrap(f)  # the function itself, not a run-time type checker's wrapper
            methods[name] = types.FunctionType(
                f.__code__, globals_, f.__name__, f.__defaults__, f.__closure__
            )
    names = {name: getattr(reference, name) for name in ("__module__", "__qualname__", "__doc__")}
    return type(reference.__name__, (reference,), {**names, **methods})


def _definitions(path: Path) -> dict | str:
    """The namespace that a notebook's definitions make, or why there is none."""
    if not path.exists():
        return f"no {path.name} in this folder"
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError):
        return f"{path.name} could not be read"
    namespace = {"__name__": f"notebook_{path.stem}"}
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        # IPython's magics and shell escapes are not Python: leave those lines out.
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            if _is_definition(node):
                module = ast.Module(body=[node], type_ignores=[])
                with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(module, str(path), "exec"), namespace)
    return namespace


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
        return True
    # Constants (`N_CTX = 8`, `NAMES = ("a", "b")`), not results of computations.
    if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
        try:
            ast.literal_eval(node.value)
        except ValueError:
            return False
        return True
    return False


def _defined_there(obj: object, namespace: dict) -> bool:
    """Written in the notebook itself, not imported from the reference."""
    return obj is not None and getattr(obj, "__module__", None) == namespace["__name__"]


def _globals_used(obj: object) -> set[str]:
    """Every global name the functions of obj (a function, or a class's methods) refer to."""
    functions = [obj] if isinstance(obj, types.FunctionType) else []
    if isinstance(obj, type):
        for value in vars(obj).values():
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            if isinstance(value, property):
                functions += [f for f in (value.fget, value.fset) if f]
            elif isinstance(value, types.FunctionType):
                functions.append(value)
    names: set[str] = set()
    codes = [f.__code__ for f in functions]
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def _resolve_dependencies(obj: object, namespace: dict, exercises: dict, seen: set) -> None:
    """The exercises obj calls, checked first: each failing one replaced by its reference."""
    for name in sorted(_globals_used(obj) - seen):
        if name in exercises and _defined_there(namespace.get(name), namespace):
            seen.add(name)
            _resolve_dependencies(namespace[name], namespace, exercises, seen)
            if not _silent_check(exercises[name], namespace[name])[0]:
                namespace[name] = exercises[name].reference


def _silent_check(exercise, learner) -> tuple[bool, str]:
    """Whether learner passes its check, and a few words on why (nothing printed)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exercise.checker(learner)
    except NotStarted:
        return False, "not started (still raises NotImplementedError)"
    except CheckFailed as failure:
        first = failure.diagnosis.strip().splitlines()[0]
        return False, "failed its check: " + (first if len(first) < 70 else first[:67] + "...")
    except Exception as error:  # noqa: BLE001 - learner code must never stop the notebook
        return False, f"its check raised {type(error).__name__}"
    return True, "passed its check"
