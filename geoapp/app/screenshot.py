"""Take the README's screenshot of a real run: ``python -m geoapp.app.screenshot [--out docs/app_screenshot.png]``.

Starts the app on a free local port with the given (default: the demo's) checkpoint and database, opens it in
headless Chromium (Debian's /usr/bin/chromium), localizes one bundled example and saves a full-page screenshot.
Nothing is built here: the demo must exist (``python app.py`` builds it on its first start).
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
from pathlib import Path

from PIL import Image

from geoapp.files import REPO_ROOT

from .bootstrap import DemoPaths
from .context import AppContext

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def take_screenshot(context: AppContext, out: Path, example: int = 0, width: int = 1400,
                    photo: Path | None = None, fov_deg: float | None = None) -> Path:
    """Localize bundled example ``example`` (or the panorama crop ``photo`` at ``fov_deg``) in a browser and save
    the page as ``out`` (PNG)."""
    from playwright.sync_api import sync_playwright

    from .ui import build_demo

    if photo is None:
        if context.examples is None or not len(context.examples):
            raise SystemExit("error: the database has no bundled examples to show: give --photo and --fov")
        photo = context.examples.path(context.examples.examples[example % len(context.examples)])
    demo = build_demo(context)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": width, "height": 1200}, device_scale_factor=1,
            )
            page = browser.new_page()
            page.goto(demo.local_url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.locator("#photo img").first.wait_for(timeout=TIMEOUT_MS)
            if fov_deg is not None:  # a photo of one's own: say what it is, as a person would
                page.locator("#photo-type label", has_text="Panorama crop").click()
                page.locator("#fov input[type=number]").fill(f"{fov_deg:g}")
                page.locator("#fov input[type=number]").press("Enter")
            # the page sets the radio to what a bundled example is used as; wait for it before localizing
            page.wait_for_function("document.querySelector('#photo-type input:checked').value.startsWith('Panorama')",
                                   timeout=TIMEOUT_MS)
            page.locator("#localize").click()
            page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {context.top_k}",
                                   timeout=TIMEOUT_MS)
            page.frame_locator("#map iframe").locator(".geoapp-marker").first.wait_for(timeout=TIMEOUT_MS)
            # where the model looked follows the answer as its own event
            page.wait_for_function("() => { const img = document.querySelector('#views img'); "
                                   "return img !== null && img.complete && img.naturalWidth > 0; }",
                                   timeout=TIMEOUT_MS)
            # Chromium paints an iframe below the fold only once it has been in view: scroll the map in first
            page.locator("#map").scroll_into_view_if_needed()
            page.wait_for_timeout(1500)  # let images and the map settle
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        demo.close()
    # 256 colours with dithering: a quarter of the bytes, no visible change (the README carries it)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(out, optimize=True)
    return out


def main(argv=None) -> int:
    demo = DemoPaths()
    p = argparse.ArgumentParser(prog="python -m geoapp.app.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(demo.shipped))
    p.add_argument("--reference-db", default=str(demo.database))
    p.add_argument("--out", default=str(REPO_ROOT / "docs" / "app_screenshot.png"))
    p.add_argument("--example", type=int, default=0, help="which bundled example to localize")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--photo", help="a panorama crop of your own to localize instead of a bundled example")
    p.add_argument("--fov", type=float, help="--photo's horizontal field of view in degrees")
    args = p.parse_args(argv)
    if (args.photo is None) != (args.fov is None):
        p.error("--photo and --fov go together")
    from geoapp.retrieval.engine import Localizer

    try:
        localizer = Localizer(args.checkpoint, args.reference_db, device="cpu")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = take_screenshot(AppContext.create(localizer, args.top_k), Path(args.out), args.example,
                          photo=None if args.photo is None else Path(args.photo), fov_deg=args.fov)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
