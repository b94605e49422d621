"""Hooks a learner's code leaves behind: every later run of the model goes through them.

`hooks_on(*objects)` lists, for every module of every module among `objects` (a bound method
counts as its module), the forward, forward pre-, backward and backward pre-hooks it holds,
and PyTorch's global module hooks; what a call adds to that list is what it left behind.
"""

from typing import Any

from torch import nn

KINDS = ["_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"]
GLOBAL = ["_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"]


def _modules(objects: tuple) -> list[nn.Module]:
    found = []
    for obj in objects:
        obj = getattr(obj, "__self__", obj)  # a bound method's module
        if isinstance(obj, nn.Module) and all(obj is not m for m in found):
            found.append(obj)
    return found


def hooks_on(*objects: Any) -> set[tuple[str, str, int]]:
    """(module name, kind, hook id) of every hook on every module under `objects`."""
    held = set()
    for root in _modules(objects):
        for name, module in root.named_modules():
            for kind in KINDS:
                for key in getattr(module, kind, None) or {}:
                    held.add((name or "the model", kind[1:], key))
    globals_ = nn.modules.module
    for kind in GLOBAL:
        for key in getattr(globals_, kind, None) or {}:
            held.add((f"every module ({kind[1:]})", kind[1:], key))
    return held


def hooks_left(before: set, after: set) -> list[str]:
    """The modules that hold a hook now that they did not before, in order, each once."""
    return list(dict.fromkeys(name for name, _, _ in sorted(after - before)))


def left_message(modules: list[str], what: str) -> str:
    return (
        f"hooks are still on {', '.join(modules[:4])} after your {what}: every later run of "
        "the model goes through them. Remove each one when its run is done (`handle = "
        "module.register_forward_hook(...)`, then `handle.remove()`, in a `finally:`)."
    )
