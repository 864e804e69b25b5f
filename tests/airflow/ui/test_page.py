"""The operator's page in a real browser (Debian's headless Chromium) inside the real Airflow UI.

An operator logs in through Airflow's login form, opens "Messages" in the Airflow navigation,
finds a dead Bauantrag by its UUID, reads its history, re-sends it with a reason; kcbus's
runtime then delivers it (the partner's drop folder is back) and the page shows it delivered.
The demo data comes from the real runtime (``_demo_bus``: partners with keys, sealed envelopes,
in-memory and file transports, kcbus's demo documents). Screenshots go to ``test-output/``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from kcbus.airflow.ui.actor import task_actor
from kcbus.ledger import Kind, MessageFilter, Status
from tests.airflow.ui._airflow_server import PASSWORDS
from tests.airflow.ui._demo_bus import (
    DemoBus,
    bauantrag,
    broken_bauantrag,
    entlassbrief,
    make_demo_bus,
)
from tests.airflow.ui.conftest import UiWorld
from tests.servers.chromium import Chromium

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: The task instance the demo's runtime plays (dag_id, run_id, task_id, map_index).
TASK = ("kcbus_bauantrag", "manual__2026-11-22T10:00:00+00:00", "intake", -1)
OUTPUT = Path(__file__).resolve().parents[3] / "test-output"
WAIT = 30


@pytest.fixture(scope="module")
def demo(ui_world: UiWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoBus]:
    """The runtime's demo: partners send a mix; Bauanträge to the Landratsamt go DEAD because
    its drop folder is missing (a permanent fault: an operator must act)."""
    # The runtime works as an Airflow task would: recording the task instance as the actor.
    world = make_demo_bus(tmp_path_factory.mktemp("ui-demo"), ui_world.ledger,
                          actor=task_actor(*TASK))
    world.send("gemeinde-musterdorf", bauantrag())
    world.send("gemeinde-musterdorf", bauantrag())
    world.send("gemeinde-musterdorf", broken_bauantrag())
    world.send("klinikum-musterkreis", entlassbrief(), end_to_end_for="praxis-dr-beispiel")
    world.bus.drain()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def browser(chromium: Chromium) -> Iterator[WebDriver]:
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium.binary)
    for flag in (
        *chromium.flags,
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,1100",
        f"--user-data-dir={tempfile.mkdtemp(prefix='kcbus-chromium-')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(chromium.driver)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: WebDriver, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    driver.save_screenshot(str(OUTPUT / f"kcbus-ui-{name}.png"))


def _login(driver: WebDriver, base: str, user: str) -> None:
    driver.get(f"{base}/auth/login?next=/")
    wait = WebDriverWait(driver, WAIT)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def _enter_page(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """Switch into the plugin's iframe and wait until the page has loaded its data."""
    wait = WebDriverWait(driver, WAIT)
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
    driver.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready=true]")))
    return wait


def _text(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def _visible(wait: WebDriverWait[WebDriver], css: str) -> WebElement:
    element: WebElement = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return element


def test_operator_finds_a_dead_message_resends_it_and_sees_it_delivered(
    ui_world: UiWorld, demo: DemoBus, browser: WebDriver
) -> None:
    base = ui_world.server.url
    dead = demo.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE, status=(Status.DEAD,)))
    assert len(dead) == 2, "demo data: both valid Bauanträge are dead"
    target = dead[0]
    assert target.uuid is not None

    _login(browser, base, "op")
    # "Messages" is in Airflow's navigation; it opens the plugin's page in the UI.
    browser.get(f"{base}/plugin/kcbus-messages")
    wait = _enter_page(browser)
    assert "op" in _text(browser, "#who")
    _visible(wait, "#chart svg rect")
    failures = _text(browser, "#failures-table")
    assert target.uuid in failures and "DEAD" in failures
    assert "drop folder does not exist" in failures
    assert "Musterfrau" not in browser.page_source  # the applicant's name never shows
    assert "REJECTED" in failures  # the invalid Bauantrag, with its reason
    browser.switch_to.default_content()
    _shot(browser, "1-overview")

    # Search by UUID: the single hit opens its history straight away.
    driver = browser
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
    uuid_field = driver.find_element(By.ID, "search-uuid")
    uuid_field.send_keys(target.uuid)
    driver.find_element(By.ID, "search-button").click()
    _visible(wait, "#detail")
    wait.until(ec.text_to_be_present_in_element((By.ID, "detail-uuid"), target.uuid))
    timeline = _text(driver, "#timeline")
    for stage in ("receive", "open", "validate", "route", "seal", "deliver"):
        assert stage in timeline
    assert "DEAD" in _text(driver, "#detail-facts")
    driver.execute_script("document.getElementById('detail').scrollIntoView()")
    driver.switch_to.default_content()
    _shot(driver, "2-history-dead")

    # Re-send with a reason: recorded with the Airflow user.
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
    driver.find_element(By.ID, "detail-resend").click()
    reason = _visible(wait, "#action-reason")
    reason.send_keys("Drop folder of the Landratsamt restored (ticket 4711)")
    driver.find_element(By.ID, "action-confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "notice"), "Re-sent 1 message(s) as op"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "timeline"), "resend"))
    assert "by op" in _text(driver, "#timeline")
    assert "ticket 4711" in _text(driver, "#timeline")
    assert "ROUTED" in _text(driver, "#detail-facts")

    # The runtime delivers it now that the partner's folder is back.
    demo.lra_folder.mkdir(parents=True)
    demo.bus.drain()
    assert len(list(demo.lra_folder.glob("*.env"))) == 1

    # The page shows it delivered (and acknowledged: the sender's receipt went out too).
    driver.find_element(By.ID, "search-button").click()
    try:
        wait.until(lambda d: any(s in _text(d, "#detail-facts")
                                 for s in ("DELIVERED", "ACKNOWLEDGED")))
    except TimeoutException:
        pytest.fail(f"page still shows: {_text(driver, '#detail-facts')}")
    timeline = _text(driver, "#timeline")
    assert timeline.index("resend") < timeline.rindex("deliver")
    driver.execute_script("document.getElementById('detail').scrollIntoView()")
    driver.switch_to.default_content()
    _shot(driver, "3-history-delivered")

    row = demo.bus.ledger.get(target.uuid)
    assert row.status in (Status.DELIVERED, Status.ACKNOWLEDGED)


def test_a_viewer_sees_the_messages_but_no_way_to_act(
    ui_world: UiWorld, demo: DemoBus, browser: WebDriver
) -> None:
    browser.delete_all_cookies()
    _login(browser, ui_world.server.url, "viewer")
    browser.get(f"{ui_world.server.url}/plugin/kcbus-messages")
    _enter_page(browser)
    assert "read only" in _text(browser, "#who")
    assert "DEAD" in _text(browser, "#failures-table")  # the other dead Bauantrag
    buttons = browser.find_elements(By.CSS_SELECTOR, "#failures-table button.resend")
    assert buttons == []
    assert not browser.find_element(By.ID, "resend-matching").is_displayed()
    browser.switch_to.default_content()
    _shot(browser, "4-viewer")


def test_the_task_instance_tab_lists_the_messages_that_task_handled(
    ui_world: UiWorld, demo: DemoBus, browser: WebDriver
) -> None:
    # What Airflow's "Messages" tab on a task instance loads (the plugin's templated href).
    dag_id, run_id, task_id, map_index = TASK
    browser.delete_all_cookies()
    _login(browser, ui_world.server.url, "viewer")
    # Airflow fills the href's {RUN_ID} etc. URL-encoded (encodeURIComponent), and leaves
    # {MAP_INDEX} as it is for a task that is not mapped (seen in Airflow 3.3).
    assert map_index == -1
    query = urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id}) + \
        "&map_index={MAP_INDEX}"
    browser.get(f"{ui_world.server.url}/kcbus/ui/?{query}")
    wait = WebDriverWait(browser, WAIT)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready=true]")))
    assert f"Task {task_id} of run {run_id}" in _text(browser, "#task-context")
    _visible(wait, "#results-table")
    rows = browser.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")
    shown = " ".join(row.text for row in rows)
    sent = demo.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE))
    assert len(sent) == 4
    for message in sent:  # three Bauanträge and the Entlassbrief (a CDA document ID)
        assert str(message.uuid) in shown
    _shot(browser, "5-task-instance")


def test_operator_resolves_a_rejection_and_resends_all_dead_of_a_flow(
    ui_world: UiWorld, demo: DemoBus, browser: WebDriver
) -> None:
    rejected = demo.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE,
                                                    status=(Status.REJECTED,)))[0]
    still_dead = demo.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE, status=(Status.DEAD,)))
    assert len(still_dead) == 1
    browser.delete_all_cookies()
    _login(browser, ui_world.server.url, "op")
    browser.get(f"{ui_world.server.url}/plugin/kcbus-messages")
    wait = _enter_page(browser)

    # Resolve the rejection (the municipality will send a corrected application).
    row = browser.find_element(By.CSS_SELECTOR, f'#failures-table tr[data-ref="{rejected.ref}"]')
    row.find_element(By.CSS_SELECTOR, "button.resolve").click()
    _visible(wait, "#action-reason").send_keys("Gemeinde informed, sends a corrected Antrag")
    browser.find_element(By.ID, "action-confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "notice"), "Resolved 1 message(s)"))
    wait.until(lambda d: rejected.ref not in _text(d, "#failures-table"))

    # Re-send every DEAD message of the flow in one go.
    Select(browser.find_element(By.CSS_SELECTOR, "#search-form select[name=flow]")
           ).select_by_value("bauantrag")
    Select(browser.find_element(By.CSS_SELECTOR, "#search-form select[name=status]")
           ).select_by_value("DEAD")
    browser.find_element(By.ID, "search-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "search-summary"), "1 matching"))
    wait.until(ec.element_to_be_clickable((By.ID, "resend-matching"))).click()
    _visible(wait, "#action-reason").send_keys("All Bauanträge to the Landratsamt again")
    browser.switch_to.default_content()
    _shot(browser, "6-resend-matching")
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe"))
    browser.find_element(By.ID, "action-confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "notice"), "Re-sent 1 message(s) as op"))
    assert demo.bus.ledger.get(still_dead[0].ref).status is Status.ROUTED
    demo.bus.drain()
    assert demo.bus.ledger.get(still_dead[0].ref).status in (
        Status.DELIVERED, Status.ACKNOWLEDGED)
    assert demo.bus.ledger.get(rejected.ref).resolved
