#!/usr/bin/env python3
"""Sign in on a gated activation page in a real browser (Debian's chromium + chromedriver, driven
by selenium) through a real OpenID provider's login form, then activate the box — or, for a
person outside the hub's allow rules, see the refusal naming who they are signed in as.

    signin_flow.py --page URL --email E --password P --expect activated|refused --shots DIR

Run by tests/hub_signin.rs inside `.venv-oidc` (make test-clients).
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


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--page", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--expect", choices=["activated", "refused", "unverified", "admin"], required=True)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--spoke-name", default="edge-from-admin")
    p.add_argument("--code", default="signin-good-code-42")
    p.add_argument("--shots", required=True)
    a = p.parse_args()
    os.makedirs(a.shots, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={max(a.width, 500)},900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    if a.width < 500:  # headless windows do not shrink below 500 px: emulate the phone instead
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": a.width, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    shot = lambda what: driver.save_screenshot(os.path.join(a.shots, f"signin-{a.expect}-{what}.png"))  # noqa: E731
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(a.page)
        wait.until(ec.presence_of_element_located((By.ID, "provider-0")))
        # Anonymous: only the sign-in buttons, no Claude link, no code form, no admin tables.
        expect(not driver.find_elements(By.ID, "mint"), "anonymous visitor sees the admin forms")
        expect(not driver.find_elements(By.ID, "activate"), "anonymous visitor sees the code form")
        expect(not driver.find_elements(By.ID, "signin"), "anonymous visitor sees the Claude link")
        expect(not driver.find_elements(By.ID, "box-id"), "anonymous visitor sees the box")
        shot("anonymous")
        driver.find_element(By.ID, "provider-0").click()
        # The provider's own login form (django-oauth-toolkit behind Django's LoginView).
        wait.until(ec.presence_of_element_located((By.ID, "id_username")))
        expect("/accounts/login/" in driver.current_url, f"not the provider's login: {driver.current_url}")
        driver.find_element(By.ID, "id_username").send_keys(a.email)
        driver.find_element(By.ID, "id_password").send_keys(a.password)
        driver.find_element(By.ID, "login-button").click()
        if a.expect == "unverified":
            wait.until(ec.presence_of_element_located((By.ID, "error")))
            text = driver.find_element(By.ID, "error").text
            expect(driver.title.startswith("Sign-in failed"), f"title {driver.title!r}")
            expect("not verified" in text, f"error {text!r}")
            expect(driver.find_elements(By.ID, "retry"), "no way to try again")
            shot("unverified")
            print(f"signin_flow: unverified email refused: {text}")
            return 0
        if a.expect == "admin":
            wait.until(ec.presence_of_element_located((By.ID, "mint")))
            shot("admin")
            name = driver.find_element(By.ID, "token-name")
            name.send_keys(a.spoke_name)
            driver.find_element(By.ID, "mint-button").click()
            wait.until(ec.presence_of_element_located((By.ID, "spoke-line")))
            line = driver.find_element(By.ID, "spoke-line").text
            expect(driver.find_element(By.ID, "docker-line").text.startswith("docker run"), "no docker line")
            expect("[Service]" in driver.find_element(By.ID, "systemd-unit").text, "no systemd unit")
            # Nothing runs off the page's own origin and nothing needs JavaScript.
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth + 1")
            expect(not overflow, "the admin page scrolls sideways")
            shot("minted")
            problems = [e["message"] for e in driver.get_log("browser")
                        if "Content Security Policy" in e["message"]]
            expect(not problems, f"browser console: {problems}")
            print(f"SPOKE-LINE {line}")
            return 0
        if a.expect == "refused":
            wait.until(ec.presence_of_element_located((By.ID, "signed-in-as")))
            expect(driver.title.startswith("Not allowed"), f"title {driver.title!r}")
            who = driver.find_element(By.ID, "signed-in-as").text
            expect(who == a.email.lower(), f"signed in as {who!r}")
            expect(a.email.lower() in driver.find_element(By.ID, "error").text, "error names nobody")
            expect(not driver.find_elements(By.ID, "activate"), "refused person sees the form")
            shot("refused")
            # Signing out comes back to the page as an anonymous visitor.
            driver.find_element(By.ID, "signout-button").click()
            wait.until(ec.presence_of_element_located((By.ID, "provider-0")))
            expect(not driver.find_elements(By.ID, "signed-in-as"), "still signed in after sign-out")
            print(f"signin_flow: refused {who} as expected, signed out")
            return 0
        wait.until(ec.presence_of_element_located((By.ID, "activate")))
        who = driver.find_element(By.ID, "signed-in-as").text
        expect(who == a.email.lower(), f"signed in as {who!r}")
        shot("signed-in")
        field = driver.find_element(By.ID, "code")
        field.send_keys(a.code)
        driver.find_element(By.ID, "activate-button").click()
        WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, "session-url")))
        url = driver.find_element(By.ID, "session-url").get_attribute("href")
        expect(url.startswith("https://"), f"session url {url}")
        shot("ready")
        problems = [e["message"] for e in driver.get_log("browser")
                    if "Content Security Policy" in e["message"]]
        expect(not problems, f"browser console: {problems}")
        print(f"signin_flow: {who} activated the box: {url}")
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure with a screenshot
        shot("failed")
        print(f"signin_flow: FAILED: {e!r} at {driver.current_url}\n{driver.page_source[:3000]}", file=sys.stderr)
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
