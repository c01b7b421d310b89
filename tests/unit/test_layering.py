"""The framework knows no application: nothing under itinerant/ imports ``services`` (the travel
mesh, the reference application), and no application word appears in its code, comments,
docstrings or help texts. The one exception is the default of ``Settings.app``, the line naming
the reference application that runs when ITINERANT_APP is unset."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
FRAMEWORK = ROOT / "itinerant"
APPLICATION = "services"
#: The one line that may name the application: Settings.app's default.
ALLOWED = (FRAMEWORK / "settings.py", 'default="services.mesh:mesh",')
WORDS = re.compile(
    r"\b(trips?|flights?|hotels?|travel\w*|planner|validator|notifier|bookings?|refunds?"
    r"|travell?ers?|itinerar\w+)\b",
    re.IGNORECASE,
)


def sources() -> list[Path]:
    return sorted(FRAMEWORK.rglob("*.py"))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, and a literal
    ``importlib.import_module("...")`` / ``__import__("...")``, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_framework_imports_no_application() -> None:
    hits = [
        f"{where(path, line)}: imports {module}"
        for path in sources()
        for line, module in imported_modules(ast.parse(path.read_text(), str(path)))
        if module == APPLICATION or module.startswith(f"{APPLICATION}.")
    ]
    assert not hits, "the framework imports the application:\n" + "\n".join(hits)


def test_the_framework_speaks_of_no_application() -> None:
    hits = []
    for path in sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if (path, line.strip()) == ALLOWED:
                continue
            words = sorted({m.group(0) for m in WORDS.finditer(line)})
            if words:
                hits.append(f"{where(path, number)}: {', '.join(words)}: {line.strip()}")
    assert not hits, f"application words in itinerant/ ({len(hits)}):\n" + "\n".join(hits)


def test_the_allowed_line_is_still_there() -> None:
    """The exception above must not outlive the line it excuses."""
    path, line = ALLOWED
    assert line in [text.strip() for text in path.read_text().splitlines()]
