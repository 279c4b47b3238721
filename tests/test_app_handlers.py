"""The app's handlers, pictures, map, examples and first-start builder, without a server."""

from __future__ import annotations

import math
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_inputs import TOP_K, bad_uploads, camera_exif, odd_uploads
from file_opens import opened_files, times_opened
from PIL import Image

from geoapp.app import figures, handlers, mapview
from geoapp.app.examples import ExampleSet
from geoapp.data.polar import polar_transform

pytest_plugins = ["app_fixtures"]  # the tiny world, model, database, app context and server
PHONE, CROP = list(handlers.PHOTO_TYPES)

# ------------------------------------------------------------------------------------------------ render


def test_display_heading_is_in_0_360():
    assert figures.display_heading(-90.0) == 270.0
    assert figures.display_heading(359.96) == 0.0  # rounds to 360.0, shown as 0.0
    assert figures.display_heading(720.25) == pytest.approx(0.2, abs=0.051)


def test_polar_to_topdown_inverts_the_spec_polar_transform():
    size = 96
    y, x = np.mgrid[0:size, 0:size]
    tile = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], -1).astype(np.uint8)
    polar = polar_transform(tile, 32, 128).astype(np.float32)
    back, valid = figures.polar_to_topdown(polar[:, :, 0], size)
    inner = valid & (np.hypot(y - size / 2, x - size / 2) < size * 0.4)
    assert np.median(np.abs(back[inner] - tile[:, :, 0][inner])) < 3
    assert not valid[0, 0] and valid[size // 2, size // 2]


def test_polar_view_outlines_a_window_that_wraps_around():
    polar = np.zeros((32, 128, 3), np.uint8)
    view = figures.polar_window_view(polar, None, offset=30, window_width=4, map_width=32, min_height=32)
    # stage columns 30..33 of 32 -> image columns 120..127 and 0..7 (the window wraps to the left edge)
    assert view[8, 120].tolist() == list(figures.WINDOW_COLOUR)  # (the compass letters are at the bottom)
    assert view[8, 6].tolist() == list(figures.WINDOW_COLOUR)
    assert view[8, 64].tolist() == [0, 0, 0]


def test_cone_points_follow_compass_bearings():
    east = figures.cone_points(50, 50, 10, heading_deg=90, fov_deg=0, steps=1)[1]
    assert east == pytest.approx((60, 50))  # east is +x
    south = figures.cone_points(50, 50, 10, heading_deg=180, fov_deg=0, steps=1)[1]
    assert south == pytest.approx((50, 60))  # south is +y (down)


def test_topdown_view_draws_the_predicted_cone_in_red():
    tile = np.full((64, 64, 3), 128, np.uint8)
    view = figures.topdown_view(tile, None, heading_deg=90, fov_deg=60, size=100)
    east, west = view[50, 80].astype(int), view[50, 20].astype(int)
    assert east[0] > east[1] + 20  # reddened inside the cone toward the east
    assert west.tolist() == [128, 128, 128]


def test_compass_svg_points_the_needles_along_compass_bearings():
    import xml.etree.ElementTree as ET

    svg = ET.fromstring(figures.compass_svg(90.0, 60.0, true_heading_deg=180.0, size=200))
    ns = {"s": "http://www.w3.org/2000/svg"}
    red, green = ("#" + "".join(f"{c:02x}" for c in colour) for colour in (figures.PREDICTED_COLOUR,
                                                                          figures.TRUE_COLOUR))
    needles = {line.get("stroke"): line for line in svg.findall("s:line", ns) if line.get("stroke-width") == "4"}
    east, south = needles[red], needles[green]
    assert float(east.get("x2")) > float(east.get("x1")) and float(east.get("y2")) == pytest.approx(100, abs=0.1)
    assert float(south.get("y2")) > float(south.get("y1")) and float(south.get("x2")) == pytest.approx(100, abs=0.1)
    texts = [t.text for t in svg.findall("s:text", ns)]
    assert texts[:4] == ["N", "E", "S", "W"] and texts[-1] == "90.0°"
    assert "true heading 180.0°" in svg.find("s:title", ns).text


def test_compose_puts_pictures_side_by_side_under_titles():
    a, b = np.full((10, 4, 3), 50, np.uint8), np.full((20, 6, 3), 200, np.uint8)
    out = figures.compose([("a", a), ("b", b)], gap=2, title_height=12)
    assert out.shape == (32, 12, 3)
    assert np.array_equal(out[12:22, :4], a) and np.array_equal(out[12:32, 6:], b)
    assert (out[22:, :4] == 255).all() and (out[12:, 4:6] == 255).all()  # white below the shorter one and between
    assert np.abs(figures.jpeg_array(figures.jpeg_bytes(out, 95)).astype(int) - out).mean() < 3


def test_picture_files_are_made_once_per_content(tmp_path, monkeypatch):
    from gradio import utils as gradio_utils

    from geoapp.app import ui

    monkeypatch.setattr(gradio_utils, "get_upload_folder", lambda: str(tmp_path))
    picture = np.zeros((16, 24, 3), np.uint8)
    picture[:, 12:] = 255
    first = ui.picture_file(picture)
    assert first.endswith(".jpg") and Path(first).parent == tmp_path / "geoapp-results"
    assert np.abs(figures.jpeg_array(Path(first).read_bytes()).astype(int) - picture).mean() < 8
    stamp = os.stat(first).st_mtime_ns
    assert ui.picture_file(picture.copy()) == first and os.stat(first).st_mtime_ns == stamp  # not written again
    assert ui.picture_file(picture[:, ::-1]) != first  # other pixels, another file
    assert ui.picture_file(picture.reshape(24, 16, 3)) != first  # the same bytes in another shape, too


# ------------------------------------------------------------------------------------------------- map


def test_destination_and_haversine_agree():
    lat, lon = mapview.destination(41.5, -93.6, 90.0, 500.0)
    assert lat == pytest.approx(41.5, abs=1e-6) and lon > -93.6
    assert mapview.haversine_m(41.5, -93.6, lat, lon) == pytest.approx(500.0, rel=1e-3)


def test_map_is_self_contained_with_markers_popups_cone_and_truth():
    world = mapview.WorldImage.from_array(np.zeros((40, 40, 3), np.uint8), 41.0, -94.0, 41.01, -93.99)
    markers = [mapview.MapMarker(r, 41.005 + r * 1e-4, -93.995, 1 - r / 10, 10.0 * r) for r in (1, 2, 3)]
    record = mapview.build_map(markers, 2, 45.0, 90.0, 30.0, truth=(41.005, -93.995), world=world)
    page = mapview.map_page(record)
    assert "<script src" not in page and "<link" not in page and "cdn." not in page  # Leaflet inlined: nothing fetched
    assert "L.marker(" in page and "L.polygon(" in page
    assert mapview.map_record(page) == record  # the page carries the record it draws
    assert [m["text"] for m in record["markers"]] == ["3", "2", "1", "T"]  # best on top of the others, then the truth
    assert [m["colour"] for m in record["markers"]][:3] == [mapview.OTHER_COLOUR, mapview.BEST_COLOUR,
                                                          mapview.OTHER_COLOUR]  # the selected rank is red
    assert "<b>Rank 2</b>" in record["markers"][1]["popup"] and "score 0.800" in record["markers"][1]["popup"]
    assert "True location" in record["markers"][3]["popup"]
    assert record["worlds"][0]["url"].startswith("data:image/jpeg;base64,")  # the world mosaic is the base layer
    assert record["tiles"] is None and record["cone"]["points"][0] == record["markers"][1]["at"]  # cone at rank 2
    cone_end = record["cone"]["points"][8]  # the middle of the arc: toward the heading (45°, north-east)
    assert cone_end[0] > record["cone"]["points"][0][0] and cone_end[1] > record["cone"]["points"][0][1]
    html = mapview.map_iframe(mapview.build_map(markers, 1, 0.0, 90.0, 30.0))
    assert html.startswith("<iframe") and "<script" not in html  # the page is escaped into srcdoc
    assert mapview.map_record(html)["tiles"] == mapview.OSM_TILES  # no world image: web map tiles


def test_map_with_leaflet_served_by_the_app_is_small_and_safe():
    markers = [mapview.MapMarker(r, 41.005 + r * 1e-4, -93.995, 1 - r / 10) for r in (1, 2, 3, 4, 5)]
    boxes = (mapview.AreaBox("a</script><b>", 41.0, -94.0, 41.01, -93.99, 12),)
    leaflet = mapview.Leaflet("gradio_api/file=/srv/leaflet.js", "gradio_api/file=/srv/leaflet.css")
    record = mapview.build_map(markers, 1, 10.0, 90.0, 30.0, areas=boxes, chosen_area="a</script><b>")
    page = mapview.map_page(record, leaflet)
    assert '<script src="gradio_api/file=/srv/leaflet.js"></script>' in page and "L.Map" not in page
    assert len(mapview.map_iframe(record, leaflet=leaflet)) < 12_000  # Leaflet itself is not in every answer
    assert page.count("</script>") == 3  # Leaflet, the record, the drawing: a name cannot close the record early
    assert mapview.map_record(page)["boxes"][0]["tooltip"].startswith("area a&lt;/script&gt;&lt;b&gt;: 12")


# -------------------------------------------------------------------------------------------- examples


def test_examples_know_their_truth_and_are_found_by_content(app_context, localizer, tmp_path):
    examples = app_context.examples
    assert examples is not None and len(examples) == 3
    for example in examples.examples:
        assert 0 <= example.heading_deg < 360
        tile_lat, tile_lon = localizer.db.latlon[example.reference_index]
        assert (example.lat, example.lon) == pytest.approx((tile_lat, tile_lon), abs=1e-6)  # camera at the centre
        renamed = tmp_path / "upload.png"
        shutil.copyfile(examples.path(example), renamed)
        assert examples.lookup(renamed) == example
    assert examples.lookup(Path(__file__)) is None
    reloaded = ExampleSet.load(examples.folder, source=_record_source(examples))
    assert reloaded is not None and reloaded.examples == examples.examples


def _record_source(examples: ExampleSet) -> dict:
    import json

    return json.loads((examples.folder / "examples.json").read_text())["source"]


# -------------------------------------------------------------------------------------------- handlers


def test_localize_an_example_fills_every_output(app_context):
    example = app_context.examples.examples[1]
    out = handlers.localize_photo(app_context, app_context.examples.path(example), 75.0, PHONE)
    assert len(out.gallery) == TOP_K
    for rank, (image, caption) in enumerate(out.gallery, start=1):
        assert image.shape == (handlers.GALLERY_SIDE, handlers.GALLERY_SIDE, 3)
        assert re.fullmatch(rf"#{rank} · [01]\.\d{{3}} · [0-9.]+ k?m( ✓)?", caption)  # rank, score, distance
    candidates = out.state.candidates
    assert [c.rank for c in candidates] == list(range(1, TOP_K + 1))
    assert all(0 <= c.score <= 1 for c in candidates)
    truth_ranks = [c.rank for c in candidates if c.index == example.reference_index]
    assert all(caption.endswith("✓") == (rank in truth_ranks) for rank, (_, caption) in enumerate(out.gallery, 1))
    sel = out.selection
    assert 0 <= sel.heading_deg < 360 and sel.heading_deg == figures.display_heading(candidates[0].heading_deg)
    assert sel.compass.startswith("<svg") and f"{sel.heading_deg:.1f}°" in sel.compass
    assert len(mapview.map_record(sel.map_html)["markers"]) == TOP_K + 1  # candidates + the true location
    # the views, on demand: the photo as the model saw it, the tile (square) and the polar tile (1:4 aspect) over the
    # strip of the gate-corr score of every heading (28 px), side by side under their titles
    views = handlers.candidate_views(app_context, out.state, 0)
    side = handlers.VIEW_SIDE
    ground = figures.upscale(figures.jpeg_array(out.state.ground_jpeg), side)  # the 64 px model input, enlarged
    assert ground.shape[0] == side and views.dtype == np.uint8
    assert views.shape == (22 + side + 28, ground.shape[1] + 8 + side + 8 + 4 * side, 3)  # two 8 px gaps
    assert np.array_equal(views[22:22 + side, :ground.shape[1]], ground)  # the photo's panel, as kept in the state
    # the example's own FoV and projection win over the slider and the radio
    assert out.state.fov_deg == example.fov_deg
    assert "bundled example" in out.query_summary and "true heading" in out.query_summary
    assert "references" in out.status and "query took" in out.status
    # the radio said "phone photo": the note says the example was used as a crop anyway (and the page's radio
    # follows an example upload, see test_app_browser)
    assert len(out.notes) == 1 and "used as a panorama crop at its own 90° field of view" in out.notes[0]
    assert handlers.localize_photo(app_context, app_context.examples.path(example), 75.0, CROP).notes == []
    assert out.answer["candidates"][0]["rank"] == 1 and out.answer["example"]["pair_id"] == example.pair_id
    assert len(pickle.dumps(out.state)) < 20_000  # the per-session state stays small (no pictures or masks)
    assert out.state.ground_jpeg and len(out.state.ground_jpeg) < 8_000  # the model's input, a small JPEG
    assert out.gallery[0][0] is handlers.gallery_picture(app_context, candidates[0])  # made once per tile


def test_each_event_returns_its_values_by_the_names_of_its_outputs(app_context, tmp_path, monkeypatch):
    from gradio import utils as gradio_utils

    from geoapp.app import ui

    monkeypatch.setattr(gradio_utils, "get_upload_folder", lambda: str(tmp_path))
    out = handlers.localize_photo(app_context, app_context.examples.path(app_context.examples.examples[0]))
    values = ui.localize_values(out)
    assert list(values) == [*ui.LOCALIZE_OUTPUTS, "state"]  # the event's outputs list is built from the same names
    assert values["heading"] == out.selection.heading_deg and values["query"] == out.query_summary
    assert values["answer"] is out.answer and values["state"] is out.state
    assert [caption for _, caption in values["gallery"]] == [caption for _, caption in out.gallery]
    chosen = ui.select_values(app_context, out.state, 1)
    assert list(chosen) == list(ui.SELECT_OUTPUTS) and "Candidate #2" in chosen["selection"]


def test_selecting_another_candidate_moves_heading_and_map(app_context):
    example = app_context.examples.examples[0]
    out = handlers.localize_photo(app_context, app_context.examples.path(example))
    third = handlers.select_candidate(app_context, out.state, 2)
    chosen = out.state.candidates[2]
    assert third.heading_deg == figures.display_heading(chosen.heading_deg)
    assert "Candidate #3" in third.summary
    assert f"{chosen.lat:.6f}" in third.summary
    record = mapview.map_record(third.map_html)
    assert record["centre"] == pytest.approx([chosen.lat, chosen.lon], abs=1e-6)  # the map follows the choice
    assert not np.array_equal(handlers.candidate_views(app_context, out.state, 2),
                              handlers.candidate_views(app_context, out.state, 0))
    with pytest.raises(handlers.UserInputError, match="no candidate #9"):
        handlers.candidate_views(app_context, out.state, 8)
    with pytest.raises(handlers.UserInputError, match="no candidate #9"):
        handlers.select_candidate(app_context, out.state, 8)
    with pytest.raises(handlers.UserInputError, match="localize a photo first"):
        handlers.select_candidate(app_context, None, 0)


@pytest.mark.parametrize("upload", bad_uploads(), ids=lambda u: u.name)
def test_bad_uploads_are_refused_with_a_clear_message(app_context, upload_dir, upload):
    path = upload.write(upload_dir)
    with pytest.raises(handlers.UserInputError) as info:
        handlers.localize_photo(app_context, path, 90.0, PHONE)
    message = str(info.value)
    assert upload.message in message and upload.name in message
    assert str(upload_dir) not in message  # the server's own paths are not shown


@pytest.mark.parametrize("upload", odd_uploads(), ids=lambda u: u.name)
def test_unusual_uploads_are_answered(app_context, upload_dir, upload):
    out = handlers.localize_photo(app_context, upload.write(upload_dir), 90.0, PHONE)
    assert len(out.gallery) == TOP_K and 0 <= out.selection.heading_deg < 360
    if upload.note:
        assert any(upload.note in note for note in out.notes)
    else:
        assert out.notes == []
    if upload.name == "exif_rotated.jpg":  # 26 mm equivalent on a 120 x 160 portrait (after the rotation)
        horizontal_mm = math.hypot(36, 24) * 120 / math.hypot(120, 160)
        assert "EXIF" in out.query_summary
        assert out.state.fov_deg == pytest.approx(math.degrees(2 * math.atan(horizontal_mm / 52)))  # 53.1, not 90


def test_a_panorama_is_cut_to_its_central_window(upload_dir):
    upload = next(u for u in odd_uploads() if u.name == "panorama_360.jpg")
    photo, _ = handlers.read_upload(upload.write(upload_dir))
    prepared = handlers.prepare_photo(photo, 72.0, PHONE, None)
    assert prepared.photo.rgb.shape[:2] == (224, round(1024 * 72 / 360))
    assert np.array_equal(prepared.photo.rgb, photo.rgb[:, 409:614])  # the central 205 of 1024 columns
    assert prepared.projection == "crop" and prepared.fov_deg == 72.0
    assert "360° panorama" in prepared.notes[0] and "panorama" in prepared.fov_text


def test_field_of_view_outside_the_slider_range_is_refused(upload_dir):
    upload = next(u for u in odd_uploads() if u.name == "grayscale.png")
    with pytest.raises(handlers.UserInputError, match="between 60° and 120°"):
        handlers.prepare_photo(handlers.read_upload(upload.write(upload_dir))[0], 200.0, CROP, None)


def test_a_phone_photo_takes_the_query_policys_field_of_view():
    from geoapp.data.photo import DecodedPhoto

    rgb = np.zeros((120, 160, 3), np.uint8)
    exif = handlers.prepare_photo(DecodedPhoto(rgb, exif_fov_deg=65.46), 90.0, PHONE, None)
    # the engine is given the slider's value for photos without a plausible EXIF one, and takes the EXIF's
    assert (exif.fov_deg, exif.projection, exif.notes) == (90.0, "pinhole", ())
    assert exif.fov_text == "65.5° (read from the photo's EXIF)"
    wrong = handlers.prepare_photo(DecodedPhoto(rgb, exif_fov_deg=173.4), 80.0, PHONE, None)
    assert wrong.fov_text == "80° (slider; the photo has no EXIF focal length)"
    assert wrong.notes == ("The photo's EXIF gives a horizontal field of view of 173.4°, which is not plausible; the "
                           "slider's 80° was used instead.",)
    assert handlers.prepare_photo(DecodedPhoto(rgb, exif_fov_deg=65.46), 80.0, CROP, None).fov_text == "80° (slider)"


def test_an_upload_is_opened_once_per_query(app_context, upload_dir):
    """The bundled-example look-up, the EXIF field of view and GPS position and the pixels come from one opening of
    each uploaded file."""
    example = app_context.examples.examples[0]
    scene = np.asarray(Image.open(app_context.examples.path(example)).convert("RGB"))
    first, second = upload_dir / "once_first.jpg", upload_dir / "once_second.jpg"
    Image.fromarray(scene).save(first, "JPEG", quality=95, exif=camera_exif(example.lat, example.lon, focal_35mm=26))
    Image.fromarray(scene[:, ::-1]).save(second, "JPEG", quality=95)
    with opened_files() as opened:
        out = handlers.localize_photo(app_context, first, 90.0, PHONE, prior_radius_km=0.1)
    assert times_opened(opened, first) == 1
    # what that one opening gave: the EXIF GPS as the prior, the EXIF field of view (26 mm on a square photo: 60.9°)
    assert out.answer["prior"]["source"] == "exif" and "read from the photo's EXIF" in out.query_summary
    assert scene.shape[0] == scene.shape[1]
    assert out.state.fov_deg == pytest.approx(math.degrees(2 * math.atan(math.hypot(36, 24) / math.sqrt(2) / 52)))
    with opened_files() as opened:
        out = handlers.localize_photo(app_context, first, 90.0, PHONE, more_paths=[second])
    assert times_opened(opened, first) == times_opened(opened, second) == 1 and len(out.answer["photos"]) == 2


def test_missing_upload_is_explained(app_context):
    with pytest.raises(handlers.UserInputError, match="Upload a ground photo"):
        handlers.localize_photo(app_context, None)




# ----------------------------------------------------------------------------------------------- areas


def test_areas_share_one_model_and_a_database_of_another_checkpoint_is_not_served(areas, areas_root):
    assert areas.names == ["city-a", "city-b"]  # in name order; city-c does not fit
    a, b = (areas.contexts[name].localizer for name in areas.names)
    assert a.model is b.model  # loaded once
    assert (len(a.db), len(b.db)) == (12, 4)  # the tiny world's test and train splits
    reason = areas.refused["city-c"]
    assert reason.startswith("area 'city-c' was built with checkpoint ")
    assert f"not the loaded tiny.safetensors {a.checkpoint_sha[:12]}…" in reason
    assert (f"rebuild it with `python -m geoapp.build_db --checkpoint {a.checkpoint_path} --dataset synth "
            f"--data-root ") in reason and f"--split test --out {areas_root / 'city-c'} --overwrite`" in reason
    assert "city-c" in areas.report() and "Not served (1 of 3 areas)" in areas.report()
    assert [label for label, _ in areas.choices()] == ["city-a (12 references)", "city-b (4 references)"]


def test_no_fitting_database_stops_the_start_with_the_reason(areas_root, other_checkpoint, tiny_checkpoint, capsys):
    from geoapp.app.areas import AreaError, find_databases, load_areas
    from geoapp.app.main import main

    with pytest.raises(AreaError, match=r"no reference database can be served[\s\S]*area 'city-a' was built with"):
        load_areas(other_checkpoint, find_databases([areas_root / "city-a", areas_root / "city-b"]), device="cpu")
    assert main(["--checkpoint", str(tiny_checkpoint), "--reference-db", str(areas_root / "city-c"),
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "error: no reference database can be served" in error and "area 'city-c' was built with" in error


def test_reference_databases_are_found_in_folders_and_named_uniquely(areas_root, tmp_path, monkeypatch):
    from geoapp.app.areas import AreaError, area_names, find_databases
    from geoapp.app.main import parse_args

    city_a, city_b, city_c = (areas_root / n for n in ("city-a", "city-b", "city-c"))
    assert find_databases([areas_root]) == [city_a, city_b, city_c]
    assert find_databases([city_b, areas_root]) == [city_b, city_a, city_c]  # a folder named twice counts once
    with pytest.raises(AreaError, match="nowhere not found"):
        find_databases([tmp_path / "nowhere"])
    with pytest.raises(AreaError, match="holds no reference database"):
        find_databases([tmp_path])
    twin = tmp_path / "elsewhere" / "city-a"
    shutil.copytree(city_a, twin)
    with pytest.raises(AreaError, match=r"two reference databases are both named 'city-a' \(.+ and .+\)"):
        area_names(find_databases([areas_root, twin]))
    assert parse_args(["--reference-db", str(city_a), str(city_b)]).reference_db == [str(city_a), str(city_b)]
    monkeypatch.setenv("GEOAPP_REFERENCE_DB", f"{city_a}{os.pathsep}{city_b}")
    assert parse_args([]).reference_db == [str(city_a), str(city_b)]


@pytest.mark.parametrize("name", ["city-a", "city-b"])
def test_each_area_answers_from_its_own_database_with_its_own_examples(areas, name):
    ctx = handlers.area_context(areas, name)
    other = areas.contexts[next(n for n in areas.names if n != name)]
    assert set(ctx.localizer.db.paths).isdisjoint(other.localizer.db.paths)  # else the test could not tell them apart
    example = ctx.examples.examples[0]
    assert example not in other.examples.examples
    out = handlers.localize_photo(ctx, ctx.examples.path(example), 90.0, CROP)
    assert {c.path for c in out.state.candidates} <= set(ctx.localizer.db.paths)
    assert out.state.area == name and out.answer["area"] == name
    assert out.answer["searched_references"] == len(ctx.localizer.db)
    assert "bundled example" in out.query_summary  # the area's own example: its truth is known
    assert out.status.startswith(f"area '{name}': ")
    # the map draws both areas' boxes, the chosen one highlighted (drawn last, on top)
    boxes = mapview.map_record(out.selection.map_html)["boxes"]
    assert len(boxes) == 2 and boxes[-1]["tooltip"] == f"area {name}: {len(ctx.localizer.db)} references (chosen)"
    overview = mapview.map_record(handlers.areas_map_html(areas, ctx))
    assert len(overview["boxes"]) == 2 and overview["boxes"][-1]["tooltip"].endswith("(chosen)")
    assert overview["markers"] == [] and overview["fit"] is not None
    assert handlers.area_coverage_text(ctx).startswith(f"**Area '{name}'.** ")


def test_an_unknown_area_is_refused_with_the_list_of_areas(areas):
    assert handlers.area_context(areas, None) is areas.first and handlers.area_context(areas, "") is areas.first
    with pytest.raises(handlers.UserInputError, match=r"There is no area 'atlantis'; this app serves 2: 'city-a', "
                                                       r"'city-b'\."):
        handlers.area_context(areas, "atlantis")
    with pytest.raises(handlers.UserInputError, match="There is no area 3;"):
        handlers.area_context(areas, 3)
    with pytest.raises(handlers.UserInputError, match="The area 'city-c' is not served: area 'city-c' was built"):
        handlers.area_context(areas, "city-c")


def test_a_single_area_page_shows_no_areas(app_context):
    from geoapp.app.areas import Areas

    single = Areas.of(app_context)
    assert single.names == [app_context.localizer.db.path.name] and single.report() == ""
    assert single.first.area_boxes == () and handlers.areas_map_html(single, single.first) == ""
    out = handlers.localize_photo(app_context, app_context.examples.path(app_context.examples.examples[0]))
    assert mapview.map_record(out.selection.map_html)["boxes"] == []
    assert out.status.startswith(app_context.localizer.describe())
    assert handlers.area_coverage_text(app_context) == handlers.coverage_text(app_context)


def test_the_server_shares_the_cores_among_the_events_it_answers_at_once(monkeypatch):
    from geoapp.app.main import parse_args
    from geoapp.runtime import blas_threads, set_blas_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # one core for the server's own work, 7 for the queries
    assert (parse_args(["--concurrency", "1"]).threads, parse_args(["--concurrency", "3"]).threads) == (7, 2)
    assert parse_args(["--concurrency", "16"]).threads == 1 and parse_args(["--threads", "3"]).threads == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert parse_args(["--concurrency", "1"]).threads == 1  # a 2-core machine: one thread a query
    with pytest.raises(SystemExit):
        parse_args(["--concurrency", "0"])
    before = blas_threads()
    if not before:  # (NumPy's wheels for Linux bundle OpenBLAS; another BLAS is left alone)
        pytest.skip("no OpenBLAS loaded in this process")
    try:
        assert set_blas_threads(1) == len(before) and blas_threads() == [1] * len(before)
    finally:
        set_blas_threads(max(before))
    assert blas_threads() == [max(before)] * len(before)
