"""docs/tutorial.md: its code is the code in docs/tutorial/, and the tests it walks through pass.

The tutorial's own tests (docs/tutorial/greetings/test_greetings.py: one handler alone with
``run_handler``, the flow in an ``InMemoryMesh``) are collected here. Every ``python`` block of
the tutorial is marked with the file it shows; a block that is not that file, whole or as one
contiguous excerpt, fails here, and so does a tutorial file the tutorial does not show whole.
docs/framework.md must have a row for every public name and every Mesh field. Last, what
``run_handler`` promises beyond what the tutorial shows (errors as they are, rollback, the
runtime's output check, spend and budget)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import BaseModel

from docs.tutorial.greetings.greeter import Greeting
from docs.tutorial.greetings.test_greetings import (  # noqa: F401 (collected by pytest)
    in_memory,
    settings,
    test_a_greeting_in_french,
    test_an_unknown_language_is_refused,
    test_english_skips_the_translator,
    test_the_greeter_greets_and_remembers,
    test_the_greeter_refuses_a_request_without_a_name,
    test_the_translator_translates,
)
from docs.tutorial.greetings.translator import Translation
from docs.tutorial.greetings.translator import agent as translator
from itinerant import Agent, BudgetExceeded, BusinessFailure, HandlerContext, Settings
from itinerant.errors import HandlerError, UnsupportedVersion
from itinerant.runtime.llm import Completion
from itinerant.testing import run_handler
from itinerant.wire.budget import Budget

T = TypeVar("T", bound=BaseModel)

ROOT = Path(__file__).parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
CODE = ROOT / "docs" / "tutorial"

#: A fenced block and the marker on the line before it: ``<!-- file: path -->`` (the block is the
#: whole file) or ``<!-- excerpt: path -->`` (the block is a contiguous part of it).
BLOCK = re.compile(
    r"(?:<!-- (?P<kind>file|excerpt): (?P<path>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.DOTALL | re.MULTILINE,
)


def blocks() -> list[tuple[str | None, str | None, str, str]]:
    return [
        (m["kind"], m["path"], m["lang"], m["body"]) for m in BLOCK.finditer(TUTORIAL.read_text())
    ]


def test_every_python_block_is_tutorial_code() -> None:
    python = [b for b in blocks() if b[2] == "python"]
    assert python, "the tutorial shows no code"
    for kind, path, _lang, body in python:
        assert path is not None, f"a python block names no file:\n{body[:200]}"
        source = (ROOT / path).read_text()
        if kind == "file":
            assert body == source, f"docs/tutorial.md shows an old copy of {path}"
        else:
            assert body in source, f"docs/tutorial.md shows an excerpt {path} no longer has"


def test_every_tutorial_file_is_shown_whole() -> None:
    """Each file of docs/tutorial/ is shown whole: in one block, or in excerpts that, in the
    order the tutorial shows them, leave out nothing but blank lines."""
    shown: dict[str, list[str]] = {}
    for _kind, path, _lang, body in blocks():
        if path is not None:
            shown.setdefault(path, []).extend(line for line in body.splitlines() if line.strip())
    for file in sorted(CODE.rglob("*")):
        if not file.is_file() or file.suffix not in (".py", ".json") or file.name == "__init__.py":
            continue
        path = str(file.relative_to(ROOT))
        lines = [line for line in file.read_text().splitlines() if line.strip()]
        assert shown.get(path) == lines, f"docs/tutorial.md does not show all of {path}"


def test_the_tutorial_counts_its_tests() -> None:
    from docs.tutorial.greetings import test_greetings

    tests = [name for name in vars(test_greetings) if name.startswith("test_")]
    passed = re.findall(r"^(\d+) passed", TUTORIAL.read_text(), re.MULTILINE)
    assert passed == [str(len(tests))], "docs/tutorial.md says another number of tests pass"
    assert set(tests) <= set(globals()), "collect every tutorial test here"


def test_the_framework_reference_names_the_public_api_and_every_mesh_field() -> None:
    import dataclasses

    import itinerant
    from itinerant import Mesh

    rows = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "framework.md").read_text(), re.M))
    api = set(itinerant.__all__)
    fields = {f.name for f in dataclasses.fields(Mesh)}
    assert api | fields == rows, (
        f"docs/framework.md lacks {sorted((api | fields) - rows)}, "
        f"has stale rows {sorted(rows - api - fields)}"
    )


# -- run_handler's contract, beyond what the tutorial shows -----------------------------------


class Note(BaseModel):
    text: str


notes = Agent("notes", "Keeps notes.", migrations=("CREATE TABLE IF NOT EXISTS notes (t TEXT)",))


@notes.handler("keep")
async def keep(note: Note, ctx: HandlerContext) -> Note:
    ctx.db.execute("INSERT INTO notes VALUES (?)", (note.text,))
    if note.text == "refuse":
        raise BusinessFailure("not this one", reason="refused")
    return note


@notes.handler("wrong")
async def wrong(note: Note, ctx: HandlerContext) -> Note:
    return Translation(text=note.text)  # type: ignore[return-value]  # the bug under test


class Metered:
    """An LLM that costs: 600 tokens and a cent a call."""

    name = "metered"
    metered = True

    async def generate(
        self, task: str, prompt: str, output: type[T], *, max_tokens: int | None = None
    ) -> Completion[T]:
        value = output.model_validate({"text": "Bonjour, Ada!"})
        return Completion(value, "m", prompt_tokens=100, completion_tokens=500, cost_usd=0.01)


async def test_run_handler_raises_the_handlers_error_and_rolls_back(tmp_path: Path) -> None:
    shared = Settings(data_dir=tmp_path, metrics_port_base=0)
    with pytest.raises(BusinessFailure) as raised:
        await run_handler(notes, "keep", {"text": "refuse"}, settings=shared)
    assert raised.value.reason == "refused"
    kept = await run_handler(notes, "keep", Note(text="fine"), settings=shared)
    assert [r["t"] for r in kept.db.execute("SELECT t FROM notes")] == ["fine"]


async def test_run_handler_checks_the_output_and_the_action() -> None:
    with pytest.raises(HandlerError, match="returned Translation, not Note"):
        await run_handler(notes, "wrong", {"text": "x"})
    with pytest.raises(UnsupportedVersion, match="no action 'forget'"):
        await run_handler(notes, "forget", {"text": "x"})


async def test_run_handler_reports_the_spend_within_the_budget_given() -> None:
    hello = {"name": "Ada", "language": "fr", "text": "Hello, Ada!", "visits": 1}
    result = await run_handler(translator, "translate", hello, provider=Metered())
    assert (result.tokens, result.cost_usd) == (600, 0.01)
    assert result.output_as(Greeting).translated_by == "metered"
    deadline = datetime.now(UTC) + timedelta(minutes=1)
    tight = Budget(max_hops=5, deadline=deadline, max_tokens=500, max_cost_usd=1.0)
    with pytest.raises(BudgetExceeded, match="over its 500"):
        await run_handler(translator, "translate", hello, provider=Metered(), budget=tight)
