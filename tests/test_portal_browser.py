"""The portal in a real headless Chromium: a user logs in, browses, queries, creates a rule from
the wizard and watches it turn ok, opens the transfer matrix after the replication, saves the
activity plot as PNG, kills a job, follows a pilot to the job it ran, opens a transformation's
progress, and logs out; a restricted directory stays hidden and a form without its CSRF token is refused.

The server and the daemons run on the test's event loop; the browser is driven from a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from cairn.sdk import Client
from kernel.db import Document
from kernel.settings import Settings
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.browser import screenshot
from tests.fixtures.grid import check_all
from tests.fixtures.rules import dataset_on_src, rule_daemons, rule_settings, tiered_ses
from wms import matching, pilot_records
from wms.config import WmsSettings

SCOPES = ("catalogue.read", "rules.read", "rules.write", "transfers.read", "jobs.read", "jobs.write")
LFNS = [f"/vo/ds/f{i}.root" for i in range(4)]
PILOT = "S0.batch.1"
# Export a plot as cairnPng does, catching the download link to read the file's first bytes.
SAVE_PNG = """
const [id, done] = [arguments[0], arguments[arguments.length - 1]];
HTMLAnchorElement.prototype.click = function () {
  const name = this.download;
  fetch(this.href).then(r => r.arrayBuffer()).then(b => done([name, Array.from(new Uint8Array(b).slice(0, 4))]));
};
document.querySelector("#" + id).closest("main").querySelector("#activity-png").click();
"""


T = TypeVar("T")


class RenderingWait(WebDriverWait[webdriver.Chrome]):
    """A wait whose conditions are asked again when the page re-rendered the element between
    finding it and reading it: Chrome then answers 'unknown error ... Node with given id does not
    belong to the document' rather than a stale reference (a failure of CI on 2026-12-05)."""

    def until(self, method: Callable[[webdriver.Chrome], T], message: str = "") -> T:
        def asked(driver: webdriver.Chrome) -> T | Literal[False]:
            try:
                return method(driver)
            except WebDriverException as exc:
                if "does not belong to the document" in (exc.msg or ""):
                    return False
                raise
        return super().until(asked, message)


def wait(driver: webdriver.Chrome, seconds: float = 15) -> RenderingWait:
    return RenderingWait(driver, seconds, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))


def log_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(f"{url}/ui/")
    wait(driver).until(ec.presence_of_element_located((By.ID, "token")))
    driver.execute_script("document.getElementById('token').value = arguments[0]", token)
    driver.find_element(By.ID, "login").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "whoami")))


def journey(driver: webdriver.Chrome, url: str, token: str, job_id: str, pilot_job: str, transformation: str) -> None:
    log_in(driver, url, token)
    screenshot(driver, "dashboard")

    driver.get(f"{url}/ui/browse?path=/vo")  # browse into a directory by clicking it
    wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, "ds/"))).click()
    wait(driver).until(ec.presence_of_element_located((By.LINK_TEXT, "f0.root")))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#listing a.file")) == 4
    screenshot(driver, "browse")

    driver.get(f"{url}/ui/browse?path=/vo/secret")  # a directory alice may not read
    wait(driver).until(ec.presence_of_element_located((By.ID, "error")))
    assert "hidden.root" not in driver.page_source

    driver.get(f"{url}/ui/find")
    driver.find_element(By.ID, "q").send_keys("name=f1.root or name=f2.root")
    driver.find_element(By.ID, "scope").clear()
    driver.find_element(By.ID, "scope").send_keys("/vo")
    driver.find_element(By.ID, "run-query").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "results")))
    assert "q=name" in driver.current_url  # the query is in the URL, so it can be shared
    assert len(driver.find_elements(By.CSS_SELECTOR, "#results a")) == 2
    screenshot(driver, "find")

    driver.get(f"{url}/ui/rule-wizard?did=vo:ds")
    driver.find_element(By.ID, "expression").send_keys("tier=1")
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "preview-ses"), "T1-C"))
    screenshot(driver, "rule-wizard")
    driver.find_element(By.ID, "expression").clear()
    driver.find_element(By.ID, "expression").send_keys("T1-A")
    wait(driver).until(lambda d: "T1-B" not in d.find_element(By.ID, "preview").text)
    driver.find_element(By.ID, "create-rule").click()
    wait(driver, 60).until(ec.text_to_be_present_in_element((By.ID, "rule-state"), "ok"))
    screenshot(driver, "rule")

    driver.get(f"{url}/ui/transfers")
    cells = wait(driver).until(ec.presence_of_element_located((By.ID, "matrix"))).text
    assert "SRC" in cells and "T1-A" in cells and "4 done, 0 failed" in cells
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot canvas"))
    screenshot(driver, "transfers")

    driver.get(f"{url}/ui/accounting?hours=6")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#se-plot canvas"))
    assert "T1-A" in driver.find_element(By.ID, "se-usage").text
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#activity-plot canvas"))
    assert "4" in driver.find_element(By.ID, "activity-totals").text  # the rule's four transfers
    name, magic = driver.execute_async_script(SAVE_PNG, "activity-plot")
    assert name == "cairn-activity.png" and magic == [0x89, 0x50, 0x4E, 0x47]  # a PNG, made in the browser
    screenshot(driver, "accounting")

    driver.get(f"{url}/ui/jobs")
    wait(driver).until(ec.element_to_be_clickable((By.ID, f"select-{job_id}"))).click()
    driver.find_element(By.ID, "kill").click()
    wait(driver).until(ec.presence_of_element_located((By.CLASS_NAME, "outcome")))
    Select(driver.find_element(By.NAME, "state")).select_by_visible_text("killed")
    driver.find_element(By.XPATH, "//button[text()='Filter']").click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, f"state-{job_id}"), "killed"))
    screenshot(driver, "jobs")

    driver.get(f"{url}/ui/pilots?site=S0")  # pilots beside their jobs
    wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, PILOT)))
    assert "batch-7" in driver.find_element(By.ID, "pilots").text
    screenshot(driver, "pilots")
    driver.find_element(By.LINK_TEXT, PILOT).click()
    wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, pilot_job))).click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "job-pilot"), PILOT))
    assert "batch-7" in driver.find_element(By.ID, "job-pilot").text

    driver.get(f"{url}/ui/productions")
    wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, transformation))).click()
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#files-plot canvas"))
    assert "0 of 4 files processed" in driver.find_element(By.ID, "progress").text
    assert "submitted" in driver.find_element(By.ID, "tasks").text
    assert "transformation" in driver.current_url  # the view is its own URL
    screenshot(driver, "transformation")

    driver.get(f"{url}/ui/rule-wizard?did=vo:ds&expression=T1-B")  # a form stripped of its CSRF token
    wait(driver).until(ec.presence_of_element_located((By.ID, "create-rule")))
    driver.execute_script("document.querySelector('#wizard input[name=csrf]').remove()")
    driver.find_element(By.ID, "create-rule").click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "error"), "CSRF"))

    driver.get(f"{url}/ui/")
    driver.find_element(By.ID, "logout").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "token")))
    driver.get(f"{url}/ui/rules")
    assert "/ui/login" in driver.current_url


async def job_at_a_pilot(db: AsyncDatabase[Document], alice: Client) -> str:
    """A job that the factory's pilot PILOT (batch id batch-7) took, through the checker and matcher."""
    await pilot_records.record_intents(db, [{"_id": PILOT, "site": "S0", "queue": "batch", "backend": "local"}])
    await pilot_records.set_submitted(db, PILOT, "batch-7")
    [job_id] = await alice.submit_jobs({"executable": "/bin/echo", "name": "at-a-pilot"})
    await check_all(db, WmsSettings())
    job = await matching.match(db, matching.PilotOffer(pilot=PILOT, site="S0"))
    assert job is not None and job["_id"] == job_id
    return str(job_id)


async def test_a_user_works_through_the_portal_in_a_browser(
    api: RunningApi, admin: Client, settings: Settings, database: AsyncDatabase[Document], tmp_path: Path,
    browser: webdriver.Chrome,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", LFNS, size=2000)
    await admin.mkdir("/vo/secret", mode=0o700)
    await admin.mkdir("/vo/out", mode=0o777)  # where the transformation's jobs would write
    await admin.register_files([{"lfn": "/vo/secret/hidden.root", "size": 1, "adler32": "00000001",
                                 "replicas": [{"se": "SRC"}]}])
    token = api.token(scopes=SCOPES)
    async with api.client(token) as alice:
        pilot_job = await job_at_a_pilot(database, alice)
        [job_id] = await alice.submit_jobs({"executable": "/bin/echo", "name": "to-kill"})
        transformation = (await alice.add_transformation({
            "name": "reprocess", "input_query": "name=f*.root", "input_path": "/vo", "grouping": {"count": 3},
            "job": {"executable": "/bin/true", "outputs": [{"path": "o", "lfn": "/vo/out/%(task)s", "se": "T1-A"}]},
        }))["id"]
    for daemon in (TransformationFeeder(database), TransformationTasks(database)):
        await daemon.run_once()
    daemons = rule_daemons(rule_settings(settings), database)
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        async with asyncio.timeout(90):
            await asyncio.to_thread(journey, browser, api.url, token, job_id, pilot_job, transformation)
    finally:
        for d in daemons:
            d.stop()
        await asyncio.gather(*tasks)
    assert [r["state"] for r in await admin.list_rules()] == ["ok"]
    assert (await admin.get_job(job_id))["state"] == "killed"
