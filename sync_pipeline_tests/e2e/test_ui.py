"""The Dagster UI in headless Chromium (issue 13): a day whose books differ is red on the reconciliation check and
on that day, the check's table shows the exact amounts, and the exceptions worklist lists the planted problem with
its fix. Assertions are on what the pages render; screenshots of the three pages go to a temporary folder, or to
the folder SYNC_UI_SCREENSHOTS names (`SYNC_UI_SCREENSHOTS=docs .venv/bin/pytest sync_pipeline_tests/e2e/test_ui.py`
refreshes the ones in docs/ and the README).

Chromium is Debian's `chromium` package (`make test` installs it where apt-get works); without it the test skips.
It is driven over the Chrome DevTools protocol with a few lines of websocket client, no WebDriver."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from sync_pipeline_tests.e2e import harness
from sync_pipeline_tests.e2e.test_crash_and_dev import _free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAY = harness.DAY
PREVIOUS_DAY = DAY - dt.timedelta(days=1)
# A dialog is shown once its fade-in is over (Blueprint's overlay transition), so a screenshot is not half-transparent.
DIALOG_SETTLED = """(() => {
    const dialog = document.querySelector('.dagster-dialog');
    return !!dialog && !document.querySelector('[class*="overlay-enter-active"], [class*="overlay-appear-active"]')
        && [dialog, ...document.querySelectorAll('.bp5-overlay-backdrop')]
            .every(e => getComputedStyle(e).opacity === '1');
})()"""
# Wide enough for the worklist's dialog to show every column, the fix included.
WIDTH, HEIGHT = 1920, 1080


def _chromium() -> str | None:
    return os.environ.get("SYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One Chromium tab driven over the DevTools protocol: navigate, read the rendered text, click, screenshot."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, *texts: str, timeout: float = 45) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text()
            if all(text in shown for text in texts):
                return shown
            if time.monotonic() > deadline:
                missing = [text for text in texts if text not in shown]
                raise AssertionError(f"not on the page after {timeout} s: {missing}\n{shown[-3000:]}")
            time.sleep(0.25)

    def click(self, text: str, within: str = "document") -> None:
        """Click the last element (in document order) whose own text is exactly `text`."""
        clicked = self.js(f"""(() => {{
            const hits = [...({within}).querySelectorAll('*')].filter(
                e => e.offsetParent !== null && e.innerText && e.innerText.trim() === {json.dumps(text)}
                     && ![...e.children].some(c => c.innerText && c.innerText.trim() === {json.dumps(text)}));
            if (!hits.length) return false;
            hits[hits.length - 1].click();
            return true;
        }})()""")
        assert clicked, f"nothing to click reads {text!r}"

    def show_markdown(self, key: str) -> list[list[str]]:
        """Open the metadata entry `key` ([Show Markdown]) and return its table as rendered: rows of cell texts."""
        opened = self.js(f"""(() => {{
            const rows = [...document.querySelectorAll('tr')].filter(
                tr => tr.firstElementChild && tr.firstElementChild.innerText.trim() === {json.dumps(key)});
            const link = rows.length && [...rows[rows.length - 1].querySelectorAll('*')].find(
                e => e.innerText && e.innerText.trim() === '[Show Markdown]' && !e.children.length);
            if (!link) return false;
            link.click();
            return true;
        }})()""")
        assert opened, f"no [Show Markdown] for {key}"
        self.wait_until("dialog opened", DIALOG_SETTLED)
        return self.js("""[...document.querySelectorAll('[role=dialog] tr, .dagster-dialog tr')].map(
            tr => [...tr.querySelectorAll('th, td')].map(cell => cell.innerText.trim()))""")

    def close_dialog(self) -> None:
        self.click("Close", within="document.querySelector('.dagster-dialog') || document")
        self.wait_until("dialog closed", "!document.querySelector('.bp5-overlay-open, .dagster-dialog')")

    def wait_until(self, what: str, condition: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(condition):
            assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
            time.sleep(0.1)

    def colour(self, expression: str) -> tuple[int, int, int]:
        """The background colour of the element `expression` finds, as (r, g, b)."""
        rgb = self.js(f"(() => {{ const e = {expression}; return e ? getComputedStyle(e).backgroundColor : ''; }})()")
        assert rgb, f"nothing found by {expression}"
        return tuple(int(float(part)) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])

    def partition_dot(self, day: dt.date) -> tuple[int, int, int]:
        """The colour of the status dot beside `day` in a partition list."""
        return self.colour(f"""[...document.querySelectorAll('[title="{day.isoformat()}"]')]
            .filter(label => label.offsetParent)
            .map(label => label.closest('[data-tooltip]').parentElement.querySelector('[style*="border-radius: 100%"]'))
            .find(dot => dot)""")

    def screenshot(self, path: Path) -> None:
        self.js("document.activeElement && document.activeElement.blur()")
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))


@contextmanager
def headless_chromium(binary: str, profile: Path) -> Iterator[Page]:
    profile.mkdir(parents=True)
    browser = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # root in a container has no user namespace sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert browser.poll() is None, f"{binary} exited with {browser.returncode}"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        tab = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(tab, max_size=None, open_timeout=30) as websocket:
            yield Page(websocket)
    finally:
        harness.stop_process_group(browser)


@contextmanager
def dagster_webserver(tmp_path: Path) -> Iterator[str]:
    """`dagster-webserver -w workspace.yaml` on a free port, with this process's environment (DAGSTER_HOME, the
    stand-ins, the ledger, SYNC_START_DATE); stopped with its code server whatever happens."""
    port = _free_port()
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster-webserver did not answer in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        harness.stop_process_group(server)
        log.close()


def _is_red(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r > 150 and r > 2 * g and r > 2 * b


def _is_green(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return g > 120 and g > r + 40 and g > b


def _dismiss_community_dialog(page: Page) -> None:
    """Dagster's first-visit "Join the Dagster community" dialog covers the page: Skip it when it shows."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "Join the Dagster community" in page.text():
            page.click("Skip")
            page.js("new Promise(r => setTimeout(r, 500))")
            return
        time.sleep(0.25)


def test_the_ui_shows_the_red_day_its_exact_amounts_and_the_worklist(tmp_path, monkeypatch):
    chromium = _chromium()
    if chromium is None:
        reason = "no Chromium on PATH (Debian: apt-get install chromium; `make test` installs it where it can)"
        if os.environ.get("SYNC_REQUIRE_CHROMIUM") == "1":  # CI: the browser check must run, never skip
            pytest.fail(f"SYNC_REQUIRE_CHROMIUM=1 but {reason}")
        pytest.skip(reason)
    shots = Path(os.environ.get("SYNC_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)

    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        # The UI reads the same persistent instance the runs write to; a week of partitions keeps the bar legible.
        shutil.copy(ROOT / "dagster.yaml", box.home / "dagster.yaml")
        monkeypatch.setenv("SYNC_START_DATE", (DAY - dt.timedelta(days=6)).isoformat())
        instance = dg.DagsterInstance.get()
        # The day before: books that match (a green day beside the red one).
        box.clock(harness.at(PREVIOUS_DAY, 10))
        box.invoice(box.customer("Early Co", "usd"), "usd", [99900])
        box.clock(None)
        assert box.materialize(PREVIOUS_DAY, instance=instance).success
        # The day: EUR 17410.51 synced, then changed in NetSuite behind the pipeline's back; and an invoice in CHF,
        # a currency field_mapping.yaml does not map (the planted exception).
        box.clock(harness.at(DAY, 9))
        paid = box.invoice(box.customer("Acme Books", "eur"), "eur", [1741051])
        box.invoice(box.customer("Dollar Co", "usd"), "usd", [125000])
        swiss = box.invoice(box.customer("Zurich AG", "chf"), "chf", [250000])
        box.clock(None)
        assert box.materialize(DAY, instance=instance).success
        box.edit_in_netsuite(
            "invoice",
            f"stripe-{paid.id}",
            {"item": {"items": [{"item": {"id": "100"}, "quantity": 1, "amount": Decimal("17420.51")}]}},
        )
        result = box.materialize(DAY, instance=instance)
        assert not harness.checks(result)[("reconciliation", "books_match_stripe")].passed
        instance.dispose()

        with dagster_webserver(tmp_path) as url, headless_chromium(chromium, tmp_path / "chromium") as page:
            # 1. The check is red on the asset, and red on its day (the day before green), in the check's partitions.
            page.goto(f"{url}/assets/reconciliation?view=checks")
            page.wait_for("books_match_stripe", "Failed")
            _dismiss_community_dialog(page)
            page.click("Partitions")  # the check's tab (the last of the two "Partitions"), not the asset's
            page.wait_for("Execution Failed (0)", "Failed (1)", "Passed (1)")
            assert _is_red(page.partition_dot(DAY)), page.partition_dot(DAY)
            assert _is_green(page.partition_dot(PREVIOUS_DAY)), page.partition_dot(PREVIOUS_DAY)
            page.click(DAY.isoformat())
            shown = page.wait_for("Latest execution", "Description", "first_differences")
            assert f"stripe-{paid.id} invoiced 17410.51 vs 17420.51" in shown
            failed_tag = page.js("""[...document.querySelectorAll('*')].filter(
                e => !e.children.length && e.innerText && e.innerText.trim() === 'Failed' && e.offsetParent).length""")
            assert failed_tag >= 2  # the check in the asset's list, and the day's result
            page.screenshot(shots / "ui-reconciliation-failed-day.png")

            # 2. The check's table for that day: the document and both amounts, exact (17410.51, never 17410.5).
            table = page.show_markdown("first_differences")
            assert table[0] == ["category", "document", "currency", "stripe", "netsuite", "difference"]
            assert table[1:] == [["invoiced", f"stripe-{paid.id}", "EUR", "17410.51", "17420.51", "-10.00"]]
            page.screenshot(shots / "ui-reconciliation-amounts.png")
            page.close_dialog()

            # 3. The exceptions worklist: the CHF invoice, its payment and customer, each with the fix in words.
            page.goto(f"{url}/assets/open_exceptions_worklist?view=events")
            page.wait_for("Materialized in run", "worklist", "UNMAPPED_CURRENCY")
            _dismiss_community_dialog(page)
            header, *rows = page.show_markdown("worklist")
            listed = {row[header.index("external_id")]: dict(zip(header, row, strict=True)) for row in rows}
            invoice = listed[f"stripe-{swiss.id}"]
            assert (invoice["error_code"], invoice["record_type"], invoice["day"]) == (
                "UNMAPPED_CURRENCY",
                "invoice",
                DAY.isoformat(),
            )
            assert (invoice["field"], invoice["value"], invoice["amount"]) == ("currency", "CHF", "CHF 2500.00")
            assert {row["record_type"] for row in listed.values()} == {"customer", "invoice", "customerPayment"}
            assert all("add CHF under currencies: in field_mapping.yaml" in row["fix"] for row in listed.values())
            page.screenshot(shots / "ui-exceptions-worklist.png")
