"""The operator console in a real browser (Playwright driving the system Chromium) against a
running mesh: a wrong token is refused; a dead letter is replayed on the page and its saga
resumes and completes; a held trip is approved on the page and completes. Each page is saved as
a screenshot under docs/images/ (shown in the README; docs/console.md#tests)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Broker, System, free_port, poll_until, start_system
from .failure_helpers import saga_view
from .test_replay_e2e import restart_with

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("ITINERANT_TEST_CHROMIUM", "/usr/bin/chromium"))
IMAGES = Path(__file__).parents[2] / "docs" / "images"
WAIT_MS = 90_000
FIXED = "ITINERANT_FAULT_INVENTORY_RATE"


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # Inventory calls fail until a test "fixes" flights (restarts it with the fault off), so a
    # saga dead-letters its flights search; trips over $100 wait for an approval.
    running = start_system(
        broker,
        tmp_path_factory.mktemp("console"),
        console_port=free_port(),
        approval_threshold_usd=100,
        fault_inventory_rate=1.0,
        max_attempts=2,
        parallel_search=False,
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make tools` installs it with apt-get")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page's script failed: {errors}"


def base(system: System) -> str:
    return f"http://127.0.0.1:{system.settings.console_port}/"


def login(page: object, system: System) -> None:
    token = system.settings.operator_tokens[system.settings.operator].get_secret_value()
    page.goto(base(system) + "login")  # type: ignore[attr-defined]
    page.fill("#token", token)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#who")).to_have_text(  # type: ignore[attr-defined]
        f"{system.settings.operator} (approver)", timeout=WAIT_MS
    )


def shoot(page: object, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=True)  # type: ignore[attr-defined]


def fix_flights(system: System) -> None:
    """The operator's fix: flights restarted with the inventory answering again (once)."""
    if system.supervisor.extra_env.get(FIXED) != "0":
        restart_with(system, "flights", {FIXED: "0"})


def wait_state(system: System, saga_id: str, state: str) -> dict[str, object]:
    found: dict[str, object] = poll_until(
        lambda: (v := saga_view(system.settings, saga_id)) and v["state"] == state and v,
        WAIT_MS / 1000,
        f"saga {saga_id} {state}",
    )
    return found


def test_a_wrong_token_is_refused(system: System, page: object) -> None:
    page.goto(base(system))  # type: ignore[attr-defined]
    expect(page).to_have_url(base(system) + "login")  # no session: the login page
    page.fill("#token", "not-the-token-of-anyone-at-all")  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#error")).to_contain_text("unknown token")  # type: ignore[attr-defined]
    shoot(page, "login")
    caller = system.settings.gateway_tokens["user"].get_secret_value()
    page.fill("#token", caller)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    expect(page.locator("#error")).to_contain_text("not an operator")  # type: ignore[attr-defined]
    answer = page.request.get(base(system) + "api/sagas")  # type: ignore[attr-defined]
    assert answer.status == 401
    anonymous = page.request.post(  # type: ignore[attr-defined]
        base(system) + "api/approvals/x", data={"decision": "approve", "why": "x"}
    )
    assert anonymous.status == 401


def test_replay_a_dead_letter_on_the_page_and_the_saga_completes(
    system: System, page: object
) -> None:
    saga_id = system.publish("trip.json")
    parked = wait_state(system, saga_id, "parked")
    assert parked["reason"] == "retries_exhausted", parked
    fix_flights(system)

    login(page, system)
    page.goto(base(system) + "#/dead-letters")  # type: ignore[attr-defined]
    row = page.locator("#dead-letters tr", has_text=saga_id)  # type: ignore[attr-defined]
    expect(row).to_contain_text("pending", timeout=WAIT_MS)
    expect(row).to_contain_text("retries_exhausted")
    shoot(page, "dead-letters")
    row.locator("a").first.click()
    expect(page.locator("#headers")).to_contain_text("x-dlq-reason")  # type: ignore[attr-defined]
    expect(page.locator("#payload")).to_be_visible()  # type: ignore[attr-defined]
    shoot(page, "dead-letter")
    page.click("#replay")  # type: ignore[attr-defined]
    expect(page.locator("#flash")).to_contain_text("replayed")  # type: ignore[attr-defined]
    expect(page.locator("#entry-status")).to_contain_text("replayed 1x", timeout=WAIT_MS)  # type: ignore[attr-defined]
    again = page.request.post(  # type: ignore[attr-defined]
        page.url.split("#")[0] + "api/dead-letters/" + page.url.rsplit("/", 1)[1] + "/replay",
        data={},
        headers={"X-Itinerant-Console": "1"},
    )
    assert again.status == 409 and "already replayed" in again.json()["error"]

    # The saga resumes: its search succeeds now, and the trip waits for its approval.
    page.goto(base(system) + f"#/sagas/{saga_id}")  # type: ignore[attr-defined]
    state = page.locator("#saga-state")  # type: ignore[attr-defined]
    expect(state).to_have_text("awaiting_approval", timeout=WAIT_MS)
    page.fill(".held .why", "replayed after the inventory fix")  # type: ignore[attr-defined]
    page.click(".held button.approve")  # type: ignore[attr-defined]
    expect(state).to_have_text("completed", timeout=WAIT_MS)
    events = [t["event"] for t in wait_state(system, saga_id, "completed")["timeline"]]  # type: ignore[index]
    assert events.index("step_deadlettered") < events.index("resumed") < events.index("completed")


def test_approve_a_held_trip_on_the_page_and_it_completes(system: System, page: object) -> None:
    fix_flights(system)
    saga_id = system.publish("trip.json")
    wait_state(system, saga_id, "awaiting_approval")

    login(page, system)
    page.goto(base(system) + "#/approvals")  # type: ignore[attr-defined]
    card = page.locator(f'article[data-saga="{saga_id}"]')  # type: ignore[attr-defined]
    expect(card).to_be_visible(timeout=WAIT_MS)
    card.locator(".why").fill("checked with the customer")
    shoot(page, "approvals")
    card.locator("button.approve").click()
    expect(page.locator("#flash")).to_contain_text(f"approved {saga_id} as operator")  # type: ignore[attr-defined]
    expect(card).to_be_hidden(timeout=WAIT_MS)

    page.goto(base(system) + f"#/sagas/{saga_id}")  # type: ignore[attr-defined]
    expect(page.locator("#saga-state")).to_have_text("completed", timeout=WAIT_MS)  # type: ignore[attr-defined]
    expect(page.locator("#timeline")).to_contain_text("operator")  # type: ignore[attr-defined]
    shoot(page, "saga")
    done = wait_state(system, saga_id, "completed")
    decided = [t for t in done["timeline"] if "approv" in t["event"]]  # type: ignore[attr-defined]
    assert any("operator" in t["detail"] for t in decided), decided

    page.goto(base(system) + "#/sagas")  # type: ignore[attr-defined]
    expect(page.locator(f'#sagas tr[data-saga="{saga_id}"]')).to_contain_text("completed")  # type: ignore[attr-defined]
    shoot(page, "sagas")
    page.set_viewport_size({"width": 390, "height": 800})  # type: ignore[attr-defined]
    page.goto(base(system) + f"#/sagas/{saga_id}")  # type: ignore[attr-defined]
    expect(page.locator("#saga-state")).to_have_text("completed")  # type: ignore[attr-defined]
    shoot(page, "narrow")


def test_agents_charts_and_the_trace_of_a_saga(system: System, page: object) -> None:
    fix_flights(system)
    saga_id = system.publish("trip.json")
    wait_state(system, saga_id, "awaiting_approval")
    login(page, system)
    decided = page.request.post(  # type: ignore[attr-defined]
        base(system) + f"api/approvals/{saga_id}",
        data={"decision": "approve", "why": "for the trace"},
        headers={"X-Itinerant-Console": "1"},
    )
    assert decided.status == 200, decided.text()
    wait_state(system, saga_id, "completed")

    page.goto(base(system) + "#/agents")  # type: ignore[attr-defined]
    agents = page.locator("#agents")  # type: ignore[attr-defined]
    expect(agents.locator('tr[data-service="coordinator"]')).to_contain_text("up", timeout=WAIT_MS)
    flights = agents.locator('tr[data-service="flights"]')
    expect(flights).to_contain_text("up")
    expect(flights.locator("td.rate")).to_have_text(re.compile(r"^\d+\.\d\d$"))
    expect(agents.locator("td.circuits", has_text="closed").first).to_be_visible(timeout=WAIT_MS)
    throughput = page.locator('[data-chart="throughput"] polyline')  # type: ignore[attr-defined]
    expect(throughput.first).to_have_attribute("points", re.compile(r"\d,\d"), timeout=WAIT_MS)
    shoot(page, "agents")
    page.set_viewport_size({"width": 390, "height": 800})  # type: ignore[attr-defined]
    expect(page.locator('[data-chart="lag"]')).to_be_visible()  # type: ignore[attr-defined]
    width = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    assert width <= 400, f"the agents page is {width}px wide at 390px"
    shoot(page, "agents-narrow")

    page.set_viewport_size({"width": 1280, "height": 860})  # type: ignore[attr-defined]
    page.goto(base(system) + f"#/sagas/{saga_id}")  # type: ignore[attr-defined]
    spans = page.locator("#spans .row")  # type: ignore[attr-defined]
    expect(spans.nth(3)).to_be_visible(timeout=WAIT_MS)
    services = set(
        page.eval_on_selector_all("#spans .row", "rows => rows.map(r => r.dataset.service)")
    )  # type: ignore[attr-defined]
    assert len(services) > 1, services
    shoot(page, "trace")
