"""The page in a real headless Chromium: upload an example, localize, inspect the results, click a candidate.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``; Playwright's own browser download is
not used). Every request that leaves the machine is blocked and recorded: the page must work offline. A
screenshot is saved as ``test-artifacts/app_browser.png``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from app_inputs import TOP_K, bad_uploads

from geoapp.app.screenshot import CHROMIUM, CHROMIUM_ARGS
from geoapp.data.photo import load_image

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database, app context and server
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 60_000
VIEWS_IMG = "const img = document.querySelector('#views img');"  # the picture of where the model looked


def in_ci() -> bool:
    """CI sets CI=true (any value but empty, 0, false or no counts)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_for_the_browser() -> list[str]:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -r requirements-dev.txt)")
    if not os.path.exists(CHROMIUM):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    return missing


MISSING = missing_for_the_browser()

pytestmark = [
    pytest.mark.browser,
    # a developer machine without Chromium or playwright skips; CI (CI=true) installs both, so there a missing one
    # fails (in the browser fixture, with what is missing) instead of passing the run without the test
    pytest.mark.skipif(bool(MISSING) and not in_ci(), reason="needs " + " and ".join(MISSING)),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
]


def test_chromium_and_playwright_are_installed():
    """Under CI=true a missing browser or playwright is a failure saying which, not a silently skipped module."""
    assert not MISSING, f"the browser test cannot run: missing {' and '.join(MISSING)}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if MISSING:  # only in CI: elsewhere the module is skipped
        pytest.fail(f"the browser test cannot run under CI=true: missing {' and '.join(MISSING)}", pytrace=False)
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1500},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


def _offline_only(page) -> list[str]:
    """Block (and record) every request that would leave the machine."""
    outside = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname in ("127.0.0.1", "localhost"):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    return outside


def _wait_for_results(page) -> None:
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {TOP_K}", timeout=TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#heading input').value !== ''", timeout=TIMEOUT_MS)


def test_upload_an_example_and_inspect_the_results(app_server, page, app_context):
    outside = _offline_only(page)
    page.goto(app_server, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.locator("#localize").wait_for(timeout=TIMEOUT_MS)

    example = app_context.examples.examples[1]
    page.locator("#photo input[type=file]").set_input_files(str(app_context.examples.path(example)))
    page.locator("#photo img").first.wait_for(timeout=TIMEOUT_MS)  # the upload has reached the server
    # an uploaded bundled example is used as a panorama crop at its own FoV: the radio and slider say so
    page.wait_for_function("document.querySelector('#photo-type input:checked').value.startsWith('Panorama crop')",
                           timeout=TIMEOUT_MS)
    assert float(page.locator("#fov input[type=number]").input_value()) == example.fov_deg
    page.locator("#localize").click()
    _wait_for_results(page)
    assert "Confidence:" in page.locator("#query-summary").inner_text()
    assert "generated (synthetic) world" in page.locator("#coverage").inner_text()

    gallery = page.locator("#gallery img")
    assert gallery.count() == TOP_K
    heading = page.locator("#heading input")
    assert 0 <= float(heading.input_value()) < 360
    assert re.search(r"Candidate #1 · score", page.locator("#selection").inner_text())
    assert "true heading" in page.locator("#query-summary").inner_text()

    map_frame = page.frame_locator("#map iframe")
    map_frame.locator(".geoapp-marker").first.wait_for(timeout=TIMEOUT_MS)
    assert map_frame.locator(".geoapp-marker").count() == TOP_K + 1  # the candidates and the true location
    mosaic = map_frame.locator("img.leaflet-image-layer")  # the world's own mosaic, not web tiles
    assert mosaic.count() == 1 and "/file=" in mosaic.get_attribute("src")  # served by the app, not inlined
    map_document = page.locator("#map iframe").element_handle().content_frame()
    map_document.wait_for_function("() => { const img = document.querySelector('img.leaflet-image-layer'); "
                                   "return img.complete && img.naturalWidth > 0; }", timeout=TIMEOUT_MS)
    assert "/file=" in map_frame.locator("script[src]").get_attribute("src")  # Leaflet served by the app, cached
    assert page.locator("#compass svg title").text_content().startswith("Compass: predicted heading")
    # where the model looked follows the answer, as its own event
    page.wait_for_function(f"() => {{ {VIEWS_IMG} return img !== null && img.complete && img.naturalWidth > 0; }}",
                           timeout=TIMEOUT_MS)
    views_src = page.evaluate(f"() => {{ {VIEWS_IMG} return img.src; }}")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_browser.png"), full_page=True)

    gallery.nth(2).click()  # another candidate moves the heading and the map to it
    page.wait_for_function("document.querySelector('#selection').innerText.includes('Candidate #3')",
                           timeout=TIMEOUT_MS)
    assert 0 <= float(heading.input_value()) < 360
    page.wait_for_function(f"() => {{ {VIEWS_IMG} return img !== null && img.src !== {views_src!r} "
                           "&& img.complete && img.naturalWidth > 0; }", timeout=TIMEOUT_MS)  # the third's views
    assert outside == []  # nothing was fetched from the internet


def test_example_click_and_a_bad_upload(app_server, page, app_context, tmp_path):
    outside = _offline_only(page)
    page.goto(app_server, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.locator("#localize").wait_for(timeout=TIMEOUT_MS)

    example = app_context.examples.examples[2]
    page.get_by_text(example.label(), exact=True).click()  # the bundled example fills the inputs
    page.locator("#photo img").first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#photo-type input:checked").get_attribute("value").startswith("Panorama crop")
    page.locator("#localize").click()
    _wait_for_results(page)
    assert example.pair_id in page.locator("#query-summary").inner_text()

    upload = next(u for u in bad_uploads() if u.name == "not_an_image.jpg")
    page.locator("#photo input[type=file]").set_input_files(str(upload.write(tmp_path)))
    page.locator("#localize").click()
    toast = page.get_by_text(upload.message)
    toast.first.wait_for(timeout=TIMEOUT_MS)  # the reason is shown, not a traceback
    assert "Traceback" not in page.content()
    assert outside == []


def test_several_areas_get_a_dropdown_that_switches_examples_coverage_and_map(app_server, areas_server, areas, page):
    outside = _offline_only(page)
    page.goto(app_server, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.locator("#localize").wait_for(timeout=TIMEOUT_MS)
    assert not page.locator("#area").is_visible()  # one area: no choice to make

    page.goto(areas_server, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.locator("#localize").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#area").is_visible()
    assert "area 'city-c' was built with checkpoint" in page.locator("#areas-report").inner_text()
    city_a, city_b = areas.contexts["city-a"], areas.contexts["city-b"]
    label_a, label_b = (c.example_label(c.examples.examples[0]) for c in (city_a, city_b))
    assert label_b.startswith("train pair")  # city-b is the tiny world's training area
    assert page.get_by_text(label_a, exact=True).is_visible() and not page.get_by_text(label_b, exact=True).is_visible()
    # both served areas' boxes are drawn (attached: Leaflet empties the path of a box outside the view)
    page.frame_locator("#map iframe").locator("path.leaflet-interactive").nth(1).wait_for(state="attached",
                                                                                        timeout=TIMEOUT_MS)

    page.locator("#area input").click()
    page.get_by_role("option", name="city-b (4 references)").click()
    page.wait_for_function("document.querySelector('#coverage').innerText.includes(\"Area 'city-b'\")",
                           timeout=TIMEOUT_MS)
    page.get_by_text(label_b, exact=True).wait_for(timeout=TIMEOUT_MS)
    assert not page.get_by_text(label_a, exact=True).is_visible()
    page.get_by_text(label_b, exact=True).click()
    page.locator("#photo img").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#localize").click()
    # city-b's distinct places at its default distance (two of its 4 tiles stand within half a tile of each other)
    example_b = city_b.examples.examples[0]
    places = city_b.localizer.localize(load_image(city_b.examples.path(example_b)), fov_deg=example_b.fov_deg,
                                       projection="crop", top_k=TOP_K,
                                       distinct_m=city_b.localizer.place_distance_m).candidates
    page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {len(places)}", timeout=TIMEOUT_MS)
    assert city_b.examples.examples[0].pair_id in page.locator("#query-summary").inner_text()
    assert page.locator("#status").inner_text().startswith("area 'city-b'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_areas.png"), full_page=True)
    assert outside == []
