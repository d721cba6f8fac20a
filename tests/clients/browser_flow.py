#!/usr/bin/env python3
"""Activate a box through its page in a real browser (Debian's chromium + chromedriver, driven
by selenium), the way a person would: open the page, check the sign-in link, the link's expiry
and its live countdown, that the button turns into "Activating…" while the code is checked,
type the code, press Activate, see the session URL. Optionally first types `bad-code`, sees one
friendly sentence with the box's words folded under "Details" and the fresh sign-in link, and
retries. Other ends: `--expect stopped` (the code given stops the box: the page says so and
offers no form), `--expect expired` (the link is past its time), `--expect host` (the host's
Docker is down: the operator's error, the form stays). Saves screenshots and fails on any CSP
violation.

Run by the Rust integration tests inside `.venv-mcp1` (which also holds selenium).
"""

import argparse
import os
import sys

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for drivers online

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def browser(width, height, dark):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if width < 500:  # headless windows do not shrink below 500 px: emulate the phone instead
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    if dark:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    return driver


def check_pending(driver, box_id):
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.ID, "activate")))
    expect(driver.find_element(By.ID, "box-id").text == box_id, "wrong #box-id")
    signin = driver.find_element(By.ID, "signin")
    expect("oauth/authorize" in signin.get_attribute("href"), "#signin is not the sign-in link")
    expect(signin.get_attribute("target") == "_blank", "#signin does not open a new tab")
    rel = signin.get_attribute("rel").split()
    expect("noopener" in rel and "noreferrer" in rel, f"#signin rel={rel}")
    button = driver.find_element(By.ID, "activate-button")
    expect(button.text == "Activate", "button text")
    expect(driver.find_element(By.ID, "spoke").text, "no host named")
    expect(driver.find_element(By.XPATH, "//dt[text()='Host']"), "the host is not labelled Host")
    stamp = driver.find_element(By.ID, "expires-at").get_attribute("datetime")
    expect(stamp.endswith("Z") and "T" in stamp, f"expires-at datetime {stamp}")
    # The script counts down (the page says the same without it).
    first = driver.find_element(By.ID, "countdown").text
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "countdown").text != first)
    expect("s)" in driver.find_element(By.ID, "countdown").text, "countdown text")
    # The inline stylesheet applied (a CSP that blocked it would leave the default look).
    radius = driver.execute_script("return getComputedStyle(arguments[0]).borderRadius", button)
    expect(radius == "8px", f"the page's style did not apply (border-radius {radius})")
    return signin.get_attribute("href")


def check_busy_button(driver):
    """The button turns into a disabled "Activating…" on submit (the submit itself held back)."""
    driver.execute_script(
        "var f=document.getElementById('activate');"
        "f.addEventListener('submit',function(e){e.preventDefault();});"
        "f.requestSubmit();")
    button = driver.find_element(By.ID, "activate-button")
    expect(button.text == "Activating\u2026" and not button.is_enabled(), f"busy button: {button.text!r}")
    driver.refresh()


def check_failure(driver, id_, sentence):
    WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, id_)))
    text = driver.find_element(By.ID, id_).text.strip()
    expect(text.startswith(sentence), f"#{id_}: {text!r}")
    details = driver.find_elements(By.ID, "details")
    expect(details and details[0].get_attribute("open") is None, "the box's words are not folded away")
    expect("oauth/authorize" not in details[0].get_attribute("textContent"), "a sign-in link in the details")


def check_console(driver):
    """No CSP violation and no error in the console (the 410 of an expired page is expected)."""
    problems = [e["message"] for e in driver.get_log("browser")
                if ("Content Security Policy" in e["message"] or e["level"] == "SEVERE")
                and "status of 410" not in e["message"]]
    expect(not problems, f"browser console: {problems}")


def submit(driver, code):
    field = driver.find_element(By.ID, "code")
    field.clear()
    field.send_keys(code)
    driver.find_element(By.ID, "activate-button").click()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--page", required=True)
    p.add_argument("--box-id", required=True)
    p.add_argument("--code", default="browser-good-code-777")
    p.add_argument("--bad-code-first", action="store_true")
    p.add_argument("--expect", choices=["ready", "stopped", "expired", "host"], default="ready")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--dark", action="store_true")
    p.add_argument("--shots", required=True, help="directory for screenshots")
    p.add_argument("--name", required=True, help="screenshot name prefix")
    a = p.parse_args()
    os.makedirs(a.shots, exist_ok=True)
    shot = lambda what: driver.save_screenshot(os.path.join(a.shots, f"{a.name}-{what}.png"))  # noqa: E731
    driver = browser(a.width, a.height, a.dark)
    try:
        driver.get(a.page)
        if a.expect == "expired":
            WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.ID, "expired")))
            text = driver.find_element(By.ID, "expired").text
            expect(text == "This link has expired \u2014 ask for a new box.", f"#expired: {text!r}")
            expect(not driver.find_elements(By.ID, "activate"), "an expired link still offers the form")
            shot("expired")
            check_console(driver)
            print(f"browser_flow {a.name}: OK expired")
            return 0
        first_link = check_pending(driver, a.box_id)
        check_busy_button(driver)
        check_pending(driver, a.box_id)
        shot("pending")
        if a.expect == "stopped":
            submit(driver, a.code)
            check_failure(driver, "stopped", "Your box stopped after that code")
            expect(not driver.find_elements(By.ID, "activate"), "a stopped box still offers the form")
            shot("stopped")
            check_console(driver)
            print(f"browser_flow {a.name}: OK stopped")
            return 0
        if a.expect == "host":
            submit(driver, a.code)
            check_failure(driver, "error", "The host running your box has a problem that its operator must fix")
            check_pending(driver, a.box_id)
            shot("host")
            check_console(driver)
            print(f"browser_flow {a.name}: OK host")
            return 0
        if a.bad_code_first:
            submit(driver, "bad-code")
            check_failure(driver, "error", "That code did not work.")
            fresh = check_pending(driver, a.box_id)
            expect("oauth/authorize" in fresh, "no fresh sign-in link after the error")
            shot("error")
            print(f"error shown; fresh link differs from the first: {fresh != first_link}")
        submit(driver, a.code)
        WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, "session-url")))
        url = driver.find_element(By.ID, "session-url").get_attribute("href")
        expect(url.startswith("https://"), f"session url {url}")
        shot("ready")
        check_console(driver)
        print(f"browser_flow {a.name}: OK {url}")
        return 0
    except Failed as e:
        shot("failed")
        print(f"browser_flow {a.name}: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
