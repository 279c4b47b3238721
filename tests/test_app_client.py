"""The launched app through ``gradio_client``: every output of ``localize``, bad inputs, concurrent clients."""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from app_inputs import TOP_K, bad_uploads, odd_uploads
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from geoapp.app import handlers

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database, app context and server
PHONE = next(iter(handlers.PHOTO_TYPES))
# Gradio's queue statistics use pandas calls that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def localize(client: Client, path, fov: float = 90.0, photo_type: str = PHONE):
    return client.predict(handle_file(str(path)), fov, photo_type, api_name="/localize")


def _is_image(path: str) -> bool:
    with Image.open(path) as image:
        return image.size[0] > 0


def test_every_event_is_named(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/localize", "/select_candidate"} <= set(endpoints)


def test_localize_round_trip_returns_every_output(client, app_context):
    example = app_context.examples.examples[0]
    result = localize(client, app_context.examples.path(example), 70.0)
    gallery, heading, compass, selection, map_html, ground, polar, topdown, query, status = result
    assert len(gallery) == TOP_K
    for rank, item in enumerate(gallery, start=1):
        assert _is_image(item["image"])
        assert re.fullmatch(rf"#{rank} · [01]\.\d{{3}} · [0-9.]+ k?m( ✓)?", item["caption"])  # rank, score, distance
    assert isinstance(heading, float) and 0 <= heading < 360
    for picture in (compass, ground, polar, topdown):
        assert _is_image(picture)
    assert "Candidate #1" in selection and f"{heading:.1f}°" in selection
    assert map_html.startswith("<iframe") and map_html.count("L.marker(") == TOP_K + 1
    assert "bundled example" in query and "true heading" in query
    assert app_context.localizer.describe() in status and "query took" in status


@pytest.mark.parametrize("upload", bad_uploads(), ids=lambda u: u.name)
def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(client, upload_dir, app_context, upload):
    with pytest.raises(AppError) as info:
        localize(client, upload.write(upload_dir))
    message = str(info.value)
    assert upload.message in message and upload.name in message and "Traceback" not in message
    gallery, heading, *_ = localize(client, app_context.examples.path(app_context.examples.examples[1]))
    assert len(gallery) == TOP_K and 0 <= heading < 360


@pytest.mark.parametrize("upload", odd_uploads(), ids=lambda u: u.name)
def test_unusual_input_is_answered(client, upload_dir, upload):
    gallery, heading, *_, query, _status = localize(client, upload.write(upload_dir))
    assert len(gallery) == TOP_K and math.isfinite(heading)
    if upload.name == "exif_rotated.jpg":
        assert "EXIF" in query


def test_eight_concurrent_clients_are_all_answered(app_server, app_context):
    paths = [app_context.examples.path(e) for e in app_context.examples.examples]

    def one(i: int):
        return localize(Client(app_server, verbose=False), Path(paths[i % len(paths)]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert len(results) == 8
    assert all(len(r[0]) == TOP_K and 0 <= r[1] < 360 for r in results)


def test_select_candidate_by_rank_follows_the_sessions_last_query(app_server, app_context):
    client = Client(app_server, verbose=False)
    with pytest.raises(AppError, match="localize a photo first"):
        client.predict(2, api_name="/select_candidate")
    gallery, *_ = localize(client, app_context.examples.path(app_context.examples.examples[2]))
    heading, compass, selection, map_html, polar, topdown = client.predict(3, api_name="/select_candidate")
    assert "Candidate #3" in selection and 0 <= heading < 360 and f"{heading:.1f}°" in selection
    assert _is_image(compass) and _is_image(polar) and _is_image(topdown) and "L.marker(" in map_html
    with pytest.raises(AppError, match="no candidate #9"):
        client.predict(9, api_name="/select_candidate")

