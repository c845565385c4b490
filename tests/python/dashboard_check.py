"""Drives the cost dashboard in headless Chromium (Debian's, via Playwright).

usage: dashboard_check.py BASE_URL ADMIN_KEY CLIENT_KEY SCREENSHOT_PATH

1. Opens /dashboard without a key: the sign-in form appears; signs in with the admin key.
2. Waits for the first update, reads the numbers shown (tiles' data-value and text) and
   checks them against GET /v1/usage (same window) fetched with the admin key.
3. Sends more chat requests through the gateway and waits until the page shows the new
   request count without being reloaded (the page counts its own updates).
4. Saves a screenshot. Prints one JSON line with what it saw. Exit status 0 = all checks held.
"""
import json
import math
import os
import sys
import time

from playwright.sync_api import sync_playwright

base, admin_key, client_key, shot = sys.argv[1:5]
chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def close(a, b, rel=1e-6, abs_=1e-9):
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def tile(page, testid):
    el = page.locator(f'[data-testid="{testid}"]')
    return el.get_attribute("data-value"), el.inner_text()


def usage(page):
    r = page.request.get(
        f"{base}/v1/usage?from=24h",
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert r.ok, f"/v1/usage answered {r.status}: {r.text()}"
    return r.json()


def wait_updates(page, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = page.locator('[data-testid="status"]').get_attribute("data-updates")
        if v is not None and int(v) >= n:
            return int(v)
        time.sleep(0.1)
    raise AssertionError(f"dashboard did not update {n} times in {timeout}s")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    external = []
    page.on(
        "request",
        lambda r: external.append(r.url) if not r.url.startswith(base) else None,
    )

    # 1. Sign in.
    resp = page.goto(f"{base}/dashboard")
    assert resp.status == 401, f"/dashboard without a key answered {resp.status}"
    page.fill('input[name="key"]', admin_key)
    page.click('button[type="submit"]')
    page.wait_for_selector('[data-testid="requests"]')

    # 2. Numbers shown = /v1/usage.
    wait_updates(page, 1)
    time.sleep(2.5)  # let the page poll once more after the last request settled
    u = usage(page)
    t = u["totals"]
    shown = {}
    for testid, key in [
        ("requests", "requests"),
        ("cost", "cost_usd"),
        ("counterfactual", "counterfactual_usd"),
        ("savings", "savings_usd"),
        ("local-share", "local_share"),
        ("cache-hit-rate", "cache_hit_rate"),
        ("errors", "errors"),
    ]:
        raw, text = tile(page, testid)
        shown[testid] = {"value": raw, "text": text}
        assert raw is not None, f"tile {testid} has no value"
        assert close(raw, t[key]), f"tile {testid}: page {raw} vs /v1/usage {t[key]}"
    assert int(shown["requests"]["value"]) > 0, "no traffic shown"
    assert float(shown["savings"]["value"]) > 0, "no savings shown"
    assert shown["requests"]["text"] == str(t["requests"])
    cats = page.locator('[data-testid="categories"] .bar').count()
    recent = page.locator('[data-testid="recent"] tbody tr').count()
    keys = page.locator('[data-testid="top-keys"] tbody tr').count()
    assert recent > 0, "no recent decisions shown"
    assert keys > 0, "no keys shown"
    assert page.locator('[data-testid="chart-cost"] svg path').count() >= 2
    first_count = int(shown["requests"]["value"])

    # 3. Live update without a reload.
    updates_before = int(page.locator('[data-testid="status"]').get_attribute("data-updates"))
    for i in range(3):
        r = page.request.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {client_key}", "Content-Type": "application/json"},
            data=json.dumps({"model": "remote", "messages": [{"role": "user", "content": f"live update {i}"}]}),
        )
        assert r.ok, f"chat answered {r.status}: {r.text()}"
    deadline = time.time() + 20
    now_count = first_count
    while time.time() < deadline:
        now_count = int(tile(page, "requests")[0])
        if now_count >= first_count + 3:
            break
        time.sleep(0.2)
    assert now_count >= first_count + 3, f"page did not update: {first_count} -> {now_count}"
    assert int(page.locator('[data-testid="status"]').get_attribute("data-updates")) > updates_before

    page.screenshot(path=shot, full_page=True)
    assert not errors, f"JavaScript errors: {errors}"
    assert not external, f"the page loaded external resources: {external}"
    browser.close()
    print(json.dumps({"shown": shown, "categories": cats, "recent": recent, "top_keys": keys,
                      "live_update": [first_count, now_count], "screenshot": shot}))
