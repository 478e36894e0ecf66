"""The website (``make site``) and the app (``make app``) in a real browser: headless Chromium.

Every page of the built site is opened and fails the check on a resource that does not load
(or is fetched from outside the site: it must read offline), a formula MathJax did not render
(or `$...$` left as text), an image that did not decode, or an internal link to a page or
anchor that does not exist. The app is started with Voila and each explorer's first slider is
moved: its figure must change, and no code may be shown. Screenshots of a chapter and of the app
go to ``docs/_build/check/`` (``DYNACPPO_SCREENSHOTS=DIR`` writes them there instead, e.g.
``docs/_static/screenshots`` for the site's front page).

Skipped, saying why, without Playwright (the ``docs`` extra), without a Chromium (Debian's
``chromium`` package, or ``CHROMIUM=/path``) or without a built site. ``make check-site`` builds
the site and runs this file.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
APP = ROOT / "app" / "explorers.ipynb"
SHOTS = Path(os.environ.get("DYNACPPO_SCREENSHOTS") or ROOT / "docs" / "_build" / "check")
#: The chapter whose screenshot the front page shows.
CHAPTER = "chapters/03_estep_geometry.html"
APP_TIMEOUT_S = 180  # Voila runs the notebook first; the run browser trains two toy runs


def _chromium() -> str | None:
    """``CHROMIUM`` if it names a file, else the first Chromium on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"] if Path(os.environ["CHROMIUM"]).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install '.[docs]'")
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium found: apt-get install chromium (Debian), or set CHROMIUM=/path "
                    "(Playwright's own browser download is not used)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    if not (SITE / "index.html").is_file():
        pytest.skip(f"no built site in {SITE}: run `make site` (make check-site does)")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


def _watch(page, origin: str) -> list[str]:
    """Record every request that fails, answers >= 400, or leaves ``origin`` (blocked)."""
    problems: list[str] = []

    def route(r) -> None:
        if r.request.url.startswith((origin, "data:", "blob:")):
            r.continue_()
        else:
            problems.append(f"fetched from outside the site: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda req: problems.append(f"failed to load: {req.url}")
            if req.url.startswith(origin) else None)
    page.on("response", lambda res: problems.append(f"HTTP {res.status}: {res.url}")
            if res.status >= 400 else None)
    return problems


def _ids(html_file: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html_file.read_text(errors="replace")))


def _check_page(page, url: str, ids: dict[Path, set[str]]) -> tuple[list[str], dict[str, int]]:
    problems = _watch(page, url.split("/", 3)[0] + "//" + url.split("/")[2])
    page.goto(url, wait_until="load")
    counts = {"formulas": page.locator(".math").count()}
    if counts["formulas"]:
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("MathJax.startup.promise")
        bad = page.evaluate("""() => [...document.querySelectorAll('.math')]
            .filter(m => !m.querySelector('mjx-container') || m.querySelector('mjx-merror'))
            .map(m => m.textContent.slice(0, 60))""")
        problems += [f"formula not rendered: {t!r}" for t in bad]
    # $...$ that MyST did not turn into math: dollars left in prose (code and outputs excluded).
    prose = page.evaluate("""() => [...document.querySelectorAll('article p, article li')]
        .filter(e => !e.closest('pre, code, .output, .cell_output'))
        .map(e => e.innerText)""")
    problems += [f"unrendered $ formula: {m!r}" for t in prose
                 for m in re.findall(r"\$[^$\s][^$]{0,60}?\$", t)]
    images = page.evaluate("""() => [...document.images].map(i => [i.currentSrc || i.src,
        i.complete && i.naturalWidth > 0])""")
    counts["images"] = len(images)
    problems += [f"image did not load: {src}" for src, ok in images if not ok]
    hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    base = urlparse(url)
    counts["links"] = 0
    for href in hrefs:
        target = urljoin(url, href)
        if urlparse(target).netloc != base.netloc:
            continue
        counts["links"] += 1
        doc, frag = urldefrag(target)
        rel = unquote(urlparse(doc).path).lstrip("/")
        path = SITE / rel
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"broken link: {href}")
        elif frag and path.suffix == ".html":
            if path not in ids:
                ids[path] = _ids(path)
            if unquote(frag) not in ids[path]:
                problems.append(f"broken anchor: {href}")
    page.unroute("**/*")
    return problems, counts


def test_every_page_of_the_site_loads_renders_and_links(browser, site_url) -> None:
    pages = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html"))
    assert CHAPTER in pages and "index.html" in pages
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    ids: dict[Path, set[str]] = {}
    report, totals = {}, {"formulas": 0, "images": 0, "links": 0}
    for rel in pages:
        problems, counts = _check_page(page, site_url + rel, ids)
        totals = {k: totals[k] + counts[k] for k in totals}
        if problems:
            report[rel] = problems
        if rel == CHAPTER:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "chapter.png"))
    page.close()
    print(f"\nsite: {len(pages)} pages, {totals['formulas']} formulas, {totals['images']} images, "
          f"{totals['links']} internal links checked; problems on {len(report)} pages")
    assert not report, "\n".join(f"{rel}:\n  " + "\n  ".join(p) for rel, p in report.items())


@pytest.fixture(scope="module")
def app_url(browser, tmp_path_factory) -> Iterator[str]:
    if not Path(sys.executable).with_name("voila").is_file():
        pytest.skip("no Voila: pip install '.[docs]'")
    port = _free_port()
    env = {**os.environ, "DYNACPPO_RUNS": str(tmp_path_factory.mktemp("no_runs"))}  # the toy runs
    log = open(tmp_path_factory.mktemp("voila") / "voila.log", "w")  # noqa: SIM115 - closed below
    # What the README says to run; its own session, so that make and voila stop together.
    proc = subprocess.Popen(["make", "-s", "app", f"APP_PORT={port}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "voila/static/", timeout=2)
                break
            except OSError as exc:  # not listening yet (a 404 answer also means it is up)
                if getattr(exc, "code", None) is not None:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"voila did not start: see {log.name}") from exc
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_the_app_shows_live_explorers_without_code(browser, app_url) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = _watch(page, app_url.rstrip("/"))
    page.goto(app_url, timeout=APP_TIMEOUT_S * 1000)
    images = page.locator(".widget-image")
    page.wait_for_function("document.querySelectorAll('.widget-image').length >= 3",
                           timeout=APP_TIMEOUT_S * 1000)
    assert page.locator(".jp-InputArea-editor:visible, .CodeMirror:visible, .cm-editor:visible").count() == 0
    assert page.locator("mjx-container").count() > 0, "the app's formulas were not rendered"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "app.png"))
    sliders = page.locator(".widget-hslider, .widget-hlogslider")
    moved = []
    for k in range(3):  # each explorer: its first slider, one step with the keyboard
        box = images.nth(k).locator("xpath=ancestor::div[contains(@class,'widget-hbox')][1]")
        slider = box.locator(".noUi-handle").first
        if slider.count() == 0:
            continue
        before = images.nth(k).get_attribute("src")
        slider.focus()
        slider.press("ArrowRight")
        try:
            page.wait_for_function("([i, src]) => document.querySelectorAll('.widget-image')[i].src !== src",
                                   arg=[k, before], timeout=30_000)
            moved.append(k)
        except Exception:
            problems.append(f"explorer {k}: the figure did not change when its slider moved")
    print(f"\napp: {images.count()} explorers, {sliders.count()} sliders; moved a slider of "
          f"explorers {moved}, each redrew")
    assert moved and not problems, "\n".join(problems)

    # The visitor's kernel dies (killed: out of memory, say): the page says so, offers a reload.
    assert page.locator("#app-kernel-gone").count() == 0
    kernel = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
    pids = subprocess.run(["pgrep", "-f", f"kernel-{kernel}.json"], capture_output=True, text=True).stdout
    assert pids.split(), f"no process for kernel {kernel}"
    os.kill(int(pids.split()[0]), signal.SIGKILL)
    page.wait_for_selector("#app-kernel-gone", timeout=60_000)
    assert "Reload the app" in page.inner_text("#app-kernel-gone")
    page.close()
