"""The portal in a real headless Chromium: a user logs in, browses, queries, creates a rule from
the wizard and watches it turn ok, opens the transfer matrix after the replication, kills a job,
and logs out; a restricted directory stays hidden and a form without its CSRF token is refused.

The server and the daemons run on the test's event loop; the browser is driven from a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from cairn.sdk import Client
from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.browser import screenshot
from tests.fixtures.rules import dataset_on_src, rule_daemons, rule_settings, tiered_ses

SCOPES = ("catalogue.read", "rules.read", "rules.write", "transfers.read", "jobs.read", "jobs.write")
LFNS = [f"/vo/ds/f{i}.root" for i in range(4)]


def wait(driver: webdriver.Chrome, seconds: float = 15) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def log_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(f"{url}/ui/")
    wait(driver).until(ec.presence_of_element_located((By.ID, "token")))
    driver.execute_script("document.getElementById('token').value = arguments[0]", token)
    driver.find_element(By.ID, "login").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "whoami")))


def journey(driver: webdriver.Chrome, url: str, token: str, job_id: str) -> None:
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

    driver.get(f"{url}/ui/accounting")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#se-plot canvas"))
    assert "T1-A" in driver.find_element(By.ID, "se-usage").text
    screenshot(driver, "accounting")

    driver.get(f"{url}/ui/jobs")
    wait(driver).until(ec.element_to_be_clickable((By.ID, f"select-{job_id}"))).click()
    driver.find_element(By.ID, "kill").click()
    wait(driver).until(ec.presence_of_element_located((By.CLASS_NAME, "outcome")))
    Select(driver.find_element(By.NAME, "state")).select_by_visible_text("killed")
    driver.find_element(By.XPATH, "//button[text()='Filter']").click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, f"state-{job_id}"), "killed"))
    screenshot(driver, "jobs")

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


async def test_a_user_works_through_the_portal_in_a_browser(
    api: RunningApi, admin: Client, settings: Settings, database: AsyncDatabase[Document], tmp_path: Path,
    browser: webdriver.Chrome,
) -> None:
    await tiered_ses(database, tmp_path)
    await dataset_on_src(database, "vo:ds", LFNS, size=2000)
    await admin.mkdir("/vo/secret", mode=0o700)
    await admin.register_files([{"lfn": "/vo/secret/hidden.root", "size": 1, "adler32": "00000001",
                                 "replicas": [{"se": "SRC"}]}])
    token = api.token(scopes=SCOPES)
    async with api.client(token) as alice:
        [job_id] = await alice.submit_jobs({"executable": "/bin/echo", "name": "to-kill"})
    daemons = rule_daemons(rule_settings(settings), database)
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        async with asyncio.timeout(90):
            await asyncio.to_thread(journey, browser, api.url, token, job_id)
    finally:
        for d in daemons:
            d.stop()
        await asyncio.gather(*tasks)
    assert [r["state"] for r in await admin.list_rules()] == ["ok"]
    assert (await admin.get_job(job_id))["state"] == "killed"
