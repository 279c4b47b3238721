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

from geoapp.app import handlers, mapview
from geoapp.app.ui import LOCALIZE_OUTPUTS, SELECT_OUTPUTS
from geoapp.data.geo import haversine_m
from geoapp.data.photo import load_image

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database, app context and server
PHONE = next(iter(handlers.PHOTO_TYPES))
# Gradio's queue statistics use pandas calls that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def by_name(result, names=LOCALIZE_OUTPUTS) -> dict:
    """An answer of gradio_client (a tuple in the event's output order) by the outputs' names."""
    assert len(result) == len(names)
    return dict(zip(names, result))


def localize(client: Client, path, fov: float = 90.0, photo_type: str = PHONE, **kwargs) -> dict:
    return by_name(client.predict(handle_file(str(path)), fov, photo_type, api_name="/localize", **kwargs))


def _is_image(path: str) -> bool:
    with Image.open(path) as image:
        return image.size[0] > 0


def test_every_event_is_named(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/localize", "/views", "/select_candidate"} <= set(endpoints)
    # the documented shape: what each output is, in order (README, "Run the demo"; geoapp.app.ui's docstring)
    kinds = [r["component"] for r in endpoints["/localize"]["returns"]]
    assert kinds == ["Gallery", "Number", "Html", "Markdown", "Html", "Markdown", "Markdown", "Json"]
    assert len(kinds) == len(LOCALIZE_OUTPUTS)
    assert [r["component"] for r in endpoints["/select_candidate"]["returns"]] == [
        "Number", "Html", "Markdown", "Html", "Image"] and len(SELECT_OUTPUTS) == 5


def test_localize_round_trip_returns_every_output(client, app_context):
    example = app_context.examples.examples[0]
    result = localize(client, app_context.examples.path(example), 70.0)
    gallery, heading, compass, selection, map_html = (result[name] for name in
                                                      ("gallery", "heading", "compass", "selection", "map"))
    query, status, answer = result["query"], result["status"], result["answer"]
    assert len(gallery) == TOP_K
    for rank, item in enumerate(gallery, start=1):
        assert _is_image(item["image"]) and item["image"].endswith(".jpg")
        assert re.fullmatch(rf"#{rank} · [01]\.\d{{3}} · [0-9.]+ k?m( ✓)?", item["caption"])  # rank, score, distance
    assert isinstance(heading, float) and 0 <= heading < 360
    assert compass.startswith("<svg") and f"{heading:.1f}°" in compass  # a vector compass, not a picture file
    assert "Candidate #1" in selection and f"{heading:.1f}°" in selection
    assert map_html.startswith("<iframe") and len(mapview.map_record(map_html)["markers"]) == TOP_K + 1
    assert len(map_html) < 12_000  # Leaflet and the world image are the app's files, not inlined in every answer
    assert "bundled example" in query and "true heading" in query
    assert app_context.localizer.describe() in status and "query took" in status
    assert f"searched {len(app_context.localizer.db)} of {len(app_context.localizer.db)} references" in status
    # the answer as data: the same candidates as the gallery, and the query's own description
    assert [c["rank"] for c in answer["candidates"]] == list(range(1, TOP_K + 1))
    assert answer["candidates"][0]["heading_deg"] == pytest.approx(heading, abs=0.06)
    assert answer["searched_references"] == len(app_context.localizer.db) and answer["prior"] is None
    assert answer["example"]["pair_id"] == example.pair_id and answer["photos"][0]["fov_deg"] == example.fov_deg
    assert "not calibrated" in query  # the tiny database has no calibration record: the page says so
    # where the model looked, on demand: one picture for the session's last answer (what the page shows next)
    views = client.predict(api_name="/views")
    assert _is_image(views) and Image.open(views).size[0] > 4 * Image.open(views).size[1]  # three panels in a row


@pytest.mark.parametrize("upload", bad_uploads(), ids=lambda u: u.name)
def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(client, upload_dir, app_context, upload):
    with pytest.raises(AppError) as info:
        localize(client, upload.write(upload_dir))
    message = str(info.value)
    assert upload.message in message and upload.name in message and "Traceback" not in message
    result = localize(client, app_context.examples.path(app_context.examples.examples[1]))
    assert len(result["gallery"]) == TOP_K and 0 <= result["heading"] < 360


@pytest.mark.parametrize("upload", odd_uploads(), ids=lambda u: u.name)
def test_unusual_input_is_answered(client, upload_dir, upload):
    result = localize(client, upload.write(upload_dir))
    assert len(result["gallery"]) == TOP_K and math.isfinite(result["heading"])
    if upload.name == "exif_rotated.jpg":
        assert "EXIF" in result["query"] and result["answer"]["photos"][0]["fov_source"] == "exif"


def test_eight_concurrent_clients_are_all_answered(app_server, app_context):
    paths = [app_context.examples.path(e) for e in app_context.examples.examples]

    def one(i: int):
        return localize(Client(app_server, verbose=False), Path(paths[i % len(paths)]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert len(results) == 8
    assert all(len(r["gallery"]) == TOP_K and 0 <= r["heading"] < 360 for r in results)


def test_select_candidate_by_rank_follows_the_sessions_last_query(app_server, app_context):
    client = Client(app_server, verbose=False)
    with pytest.raises(AppError, match="localize a photo first"):
        client.predict(2, api_name="/select_candidate")
    with pytest.raises(AppError, match="localize a photo first"):
        client.predict(api_name="/views")
    answer = localize(client, app_context.examples.path(app_context.examples.examples[2]))["answer"]
    third = by_name(client.predict(3, api_name="/select_candidate"), SELECT_OUTPUTS)
    heading, selection = third["heading"], third["selection"]
    assert "Candidate #3" in selection and 0 <= heading < 360 and f"{heading:.1f}°" in selection
    assert f"{heading:.1f}°" in third["compass"] and _is_image(third["views"])
    assert third["views"] != client.predict(api_name="/views")
    row = answer["candidates"][2]
    assert mapview.map_record(third["map"])["centre"] == pytest.approx([row["lat"], row["lon"]], abs=1e-6)
    with pytest.raises(AppError, match="no candidate #9"):
        client.predict(9, api_name="/select_candidate")
    for rank, message in [("abc", "The candidate rank must be a number between 1 and 10000, got 'abc'"),
                          (2.5, "must be a whole number"), (0, "must be between 1 and 10000, got 0")]:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(rank, api_name="/select_candidate")


@pytest.mark.parametrize("args, message", [
    ({"fov": "abc"}, "The field of view must be a number between 60° and 120°, got 'abc'"),
    ({"fov": 500}, "The field of view must be between 60° and 120°, got 500°"),
    ({"fov": True}, "The field of view must be a number between 60° and 120°, got bool True"),
    ({"photo_type": "Selfie"}, "The kind of image must be one of"),
    ({"prior_lat": "north"}, "The prior's latitude must be a number between -90° and 90°, got 'north'"),
    ({"prior_lat": 40.0}, "Give both the latitude and the longitude"),
    ({"prior_lat": 40.0, "prior_lon": -75.0, "prior_radius_km": 500}, "The prior's radius must be between 0.1 km"),
    ({"prior_lat": 0.0, "prior_lon": 0.0}, "no reference tile lies within 1 km of 0.000000, 0.000000"),
    ({"use_exif_gps": "yes"}, "'Use the photo's GPS' must be true or false, got 'yes'"),
])
def test_malformed_api_arguments_get_their_own_message(client, app_context, args, message):
    values = {"fov": 90.0, "photo_type": PHONE, "prior_lat": None, "prior_lon": None, "prior_radius_km": None,
              "use_exif_gps": True, **args}
    path = app_context.examples.path(app_context.examples.examples[0])
    with pytest.raises(AppError, match=re.escape(message)) as info:
        client.predict(handle_file(str(path)), values["fov"], values["photo_type"], None, values["prior_lat"],
                       values["prior_lon"], values["prior_radius_km"], values["use_exif_gps"], api_name="/localize")
    assert "Something went wrong" not in str(info.value) and "Traceback" not in str(info.value)


def test_prior_and_more_photos_through_the_api(client, app_context, upload_dir):
    examples = app_context.examples.examples
    lat, lon = examples[0].lat, examples[0].lon
    result = by_name(client.predict(
        handle_file(str(app_context.examples.path(examples[0]))), 90.0, PHONE,
        [handle_file(str(app_context.examples.path(examples[1])))], lat, lon, 0.1, True, api_name="/localize"))
    query, status, answer = result["query"], result["status"], result["answer"]
    inside = answer["searched_references"]
    assert 0 < inside < len(app_context.localizer.db) and f"searched {inside} of" in status
    assert answer["prior"] == {"lat": lat, "lon": lon, "radius_m": 100.0, "source": "given"}
    assert len(answer["photos"]) == 2 and len(answer["candidates"][0]["photo_headings_deg"]) == 2
    assert "2 photos from one spot" in query and "Location prior" in query



def test_an_iphone_heic_with_gps_is_answered_with_its_gps_as_the_prior(client, app_context, upload_dir):
    """A HEIC (the iPhone default) made here, with an EXIF GPS position at a bundled example's true location:
    decoded, localized, and searched only around that position."""
    import numpy as np
    from PIL import Image

    example = app_context.examples.examples[0]
    rgb = np.asarray(Image.open(app_context.examples.path(example)).convert("RGB"))
    exif = Image.Exif()

    def dms(value):
        from PIL.TiffImagePlugin import IFDRational

        value = abs(value)
        minutes = (value - int(value)) * 60
        return (IFDRational(int(value), 1), IFDRational(int(minutes), 1),
                IFDRational(round((minutes - int(minutes)) * 60 * 10000), 10000))

    exif.get_ifd(0x8825).update({1: "N" if example.lat >= 0 else "S", 2: dms(example.lat),
                                 3: "E" if example.lon >= 0 else "W", 4: dms(example.lon)})
    path = Path(upload_dir) / "IMG_0001.HEIC"
    Image.fromarray(rgb).save(path, format="HEIF", quality=95, exif=exif.tobytes())
    assert path.read_bytes()[4:12] == b"ftypheic"
    crop_type = list(handlers.PHOTO_TYPES)[1]
    result = by_name(client.predict(handle_file(str(path)), example.fov_deg, crop_type, None, None, None, 0.1, True,
                                    api_name="/localize"))
    assert len(result["gallery"]) <= TOP_K and 0 <= result["heading"] < 360
    answer = result["answer"]
    prior = answer["prior"]
    assert prior["source"] == "exif" and prior["radius_m"] == 100.0
    assert prior["lat"] == pytest.approx(example.lat, abs=1e-6) and prior["lon"] == pytest.approx(example.lon, abs=1e-6)
    assert 0 < answer["searched_references"] < len(app_context.localizer.db)
    assert answer["photos"][0]["projection"] == "crop"


# ----------------------------------------------------------------------------------------------- areas


@pytest.fixture(scope="module")
def areas_client(areas_server):
    return Client(areas_server, verbose=False)


def _tiles(ctx) -> set[str]:
    return {Path(p).name for p in ctx.localizer.db.paths}


@pytest.mark.parametrize("name", ["city-a", "city-b", None])
def test_the_api_answers_from_the_chosen_area(areas_client, areas, name):
    ctx = areas.contexts[name or "city-a"]  # no area: the first
    other = areas.contexts["city-b" if ctx.name == "city-a" else "city-a"]
    assert _tiles(ctx).isdisjoint(_tiles(other))  # else the answer could not tell the areas apart
    path = ctx.examples.path(ctx.examples.examples[1])
    area = {} if name is None else {"area": name}
    result = localize(areas_client, path, **area)
    gallery, query, status, answer = result["gallery"], result["query"], result["status"], result["answer"]
    assert answer["area"] == ctx.name and status.startswith(f"area '{ctx.name}': ")
    assert answer["searched_references"] == len(ctx.localizer.db)
    assert {c["tile"] for c in answer["candidates"]} <= _tiles(ctx)
    # the area's distinct places at its own distance (half its tiles): fewer than TOP_K where its tiles are close
    example = ctx.examples.examples[1]
    places = ctx.localizer.localize(load_image(path), fov_deg=example.fov_deg, projection="crop", top_k=TOP_K,
                                    distinct_m=ctx.localizer.place_distance_m).candidates
    assert answer["distinct_places_m"] == ctx.localizer.place_distance_m == 32.0
    assert [c["tile"] for c in answer["candidates"]] == [Path(c.path).name for c in places]
    assert len(gallery) == len(places) <= min(TOP_K, len(ctx.localizer.db)) and "bundled example" in query


def test_select_candidate_stays_in_the_area_of_the_query(areas_client, areas):
    ctx = areas.contexts["city-b"]
    path = ctx.examples.path(ctx.examples.examples[0])
    second = localize(areas_client, path, area="city-b")["answer"]["candidates"][1]
    selection = by_name(areas_client.predict(2, api_name="/select_candidate"), SELECT_OUTPUTS)["selection"]
    assert "Candidate #2** in area 'city-b'" in selection and f"{second['lat']:.6f}, {second['lon']:.6f}" in selection


@pytest.mark.parametrize("area, message", [
    ("atlantis", "There is no area 'atlantis'; this app serves 2: 'city-a', 'city-b'."),
    (7, "There is no area 7; this app serves 2: 'city-a', 'city-b'."),
    ("city-c", "The area 'city-c' is not served: area 'city-c' was built with checkpoint"),
])
def test_an_unknown_area_is_refused_with_the_known_ones(areas_client, areas, area, message):
    ctx = areas.first
    with pytest.raises(AppError, match=re.escape(message)) as info:
        areas_client.predict(handle_file(str(ctx.examples.path(ctx.examples.examples[0]))), 90.0, PHONE, area=area,
                             api_name="/localize")
    assert "Something went wrong" not in str(info.value) and "Traceback" not in str(info.value)


def _components(url: str) -> dict[str, dict]:
    """The page's components by elem_id, with their start-up values and visibility."""
    import httpx

    config = httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()
    return {c["props"]["elem_id"]: c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}


def test_the_page_names_the_areas_and_the_one_that_does_not_fit(areas_server, app_server):
    page = _components(areas_server)
    assert page["area"]["visible"] is True and page["area"]["value"] == "city-a"
    assert [choice[0] for choice in page["area"]["choices"]] == ["city-a (12 references)", "city-b (4 references)"]
    report = page["areas-report"]
    assert report["visible"] is True and "area 'city-c' was built with checkpoint" in report["value"]
    assert "python -m geoapp.build_db" in report["value"]
    assert len(mapview.map_record(page["map"]["value"])["boxes"]) == 2  # both areas' boxes before any query
    single = _components(app_server)  # one area: the page as it always was
    assert single["area"]["visible"] is False and single["areas-report"]["visible"] is False
    assert not single["map"]["value"]


def test_distinct_places_through_the_api(client, app_context):
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/localize"]["parameters"]
    last = parameters[-1]  # after every older input, so positional calls keep working
    assert last["parameter_name"] == "distinct_m" and last["parameter_has_default"]
    assert last["parameter_default"] is None
    path = handle_file(str(app_context.examples.path(app_context.examples.examples[0])))
    answer = by_name(client.predict(path, 90.0, PHONE, api_name="/localize"))["answer"]  # the older call
    assert answer["distinct_places_m"] == 32.0  # the area's default: half its 64 m tiles
    answer = by_name(client.predict(path, 90.0, PHONE, distinct_m=0, api_name="/localize"))["answer"]
    assert answer["distinct_places_m"] == 0.0
    result = by_name(client.predict(path, 90.0, PHONE, None, None, None, None, True, None, 100, api_name="/localize"))
    answer = result["answer"]
    assert answer["distinct_places_m"] == 100.0 and "no two candidates within 100 m" in result["query"]
    rows = answer["candidates"]
    assert len(rows) >= 2 and all(haversine_m(a["lat"], a["lon"], b["lat"], b["lon"]) >= 100.0
               for i, a in enumerate(rows) for b in rows[i + 1:])
    with pytest.raises(AppError, match=re.escape("The distinct places' distance must be between 0 m and 10000 m, "
                                                 "got -1 m")):
        client.predict(path, 90.0, PHONE, distinct_m=-1, api_name="/localize")
