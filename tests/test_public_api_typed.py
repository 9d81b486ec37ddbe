"""Every public function and method is fully annotated, and every public function and class has a docstring.

Public: a name without a leading underscore, at module level or nested only inside public classes (functions
nested in functions are not). A public class's ``__init__`` counts too: its parameters need annotations, not its
return or a docstring (the class's docstring covers it). ``self``/``cls`` need none; ``*args``/``**kwargs`` do.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "createml_widgets"

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _public_definitions(body: list[ast.stmt], in_class: bool) -> list[tuple[Definition, bool]]:
    """The public functions and classes of `body` (module or public class), with whether each is a method."""
    found: list[tuple[Definition, bool]] = []
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_") or (in_class and node.name == "__init__"):
                found.append((node, in_class))
        elif isinstance(node, ast.ClassDef):
            if not node.name.startswith("_"):
                found.append((node, in_class))
                found.extend(_public_definitions(node.body, True))
        elif isinstance(node, ast.If | ast.Try):  # definitions under `if TYPE_CHECKING:` or `try:` at this level
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                found.extend(_public_definitions(block, in_class))
            for handler in getattr(node, "handlers", []):
                found.extend(_public_definitions(handler.body, in_class))
    return found


def _is_static(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> list[ast.arg]:
    """The parameters that need an annotation: all but a method's `self`/`cls`."""
    args = node.args
    params = [*args.posonlyargs, *args.args]
    if is_method and not _is_static(node) and params and params[0].arg in ("self", "cls", "mcs"):
        params = params[1:]
    params += args.kwonlyargs
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    return params


def _problems() -> tuple[list[str], dict[str, int]]:
    problems: list[str] = []
    counts = dict(functions=0, unannotated_functions=0, parameters=0, annotated=0, undocumented=0)
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE.parent)
        for node, is_method in _public_definitions(ast.parse(path.read_text(), str(path)).body, False):
            place = f"{where}:{node.lineno} {node.name}"
            if isinstance(node, ast.ClassDef):
                if ast.get_docstring(node) is None:
                    counts["undocumented"] += 1
                    problems.append(f"{place}: class has no docstring")
                continue
            counts["functions"] += 1
            params = _parameters(node, is_method)
            missing = [("*" if a is node.args.vararg else "**" if a is node.args.kwarg else "") + a.arg
                       for a in params if a.annotation is None]
            counts["parameters"] += len(params)
            counts["annotated"] += len(params) - len(missing)
            no_return = node.returns is None and node.name != "__init__"
            if missing or no_return:
                counts["unannotated_functions"] += 1
                what = [f"parameter {', '.join(missing)}"] if missing else []
                problems.append(f"{place}: no annotation on {' and '.join(what + ['return'] * no_return)}")
            if node.name != "__init__" and ast.get_docstring(node) is None:
                counts["undocumented"] += 1
                problems.append(f"{place}: no docstring")
    return problems, counts


def test_the_walk_sees_the_package():
    """The walk finds the package's public API (a moved package would make the test below pass on nothing)."""
    _, counts = _problems()
    assert counts["functions"] > 300 and counts["parameters"] > 500, counts


def test_every_public_function_is_typed_and_documented():
    problems, counts = _problems()
    assert not problems, f"{len(problems)} problems ({counts}):\n" + "\n".join(problems)
