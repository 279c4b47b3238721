"""``python -m geoapp.localize`` on the tiny world: the three output formats, the table, bad files among good ones,
HEIC, EXIF GPS distances, folder walks and the exit status.

The photos are ground crops of the tiny world's test panoramas at 90 deg, as high as the tiny model's input (64
px), so ``--projection auto`` takes them as panorama-grid crops; every row is checked against the
``Localizer`` answering the same photo directly.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from file_opens import opened_files, times_opened
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoapp import localize
from geoapp.retrieval.export import COLUMNS, FOV_UNKNOWN, format_table, geojson_collection, localize_one

pytest_plugins = ["app_fixtures"]  # the tiny world, model and database (session fixtures)

TOP_K = 3
FOV = 90.0
R_EARTH = 6_371_008.8


def great_circle_m(lat1, lon1, lat2, lon2) -> float:
    """The test's own haversine (the code under test has its own in geoapp.data.geo)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * R_EARTH * math.asin(math.sqrt(a))


def dms(value: float):
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = ((value - degrees) * 60 - minutes) * 60
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(round(seconds * 10000), 10000)


def gps_exif(lat: float, lon: float) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)})
    return exif.tobytes()


@pytest.fixture(scope="module")
def crops(tiny_world, tiny_checkpoint):
    """Three 64 x 64 ground crops (90 deg) of test pairs 0, 5 and 11, with the pairs' true locations."""
    from geoapp.data.datasets import build_dataset
    from geoapp.data.fov import crop_fov
    from geoapp.model import ModelConfig, read_metadata

    config = ModelConfig.from_dict(read_metadata(tiny_checkpoint)["model_config"])
    data = build_dataset("synth", tiny_world, "test", fov_deg=FOV, train=False,
                         ground_size=(config.ground_height, None), sat_size=(config.sat_height, config.sat_width))
    out = []
    for index in (0, 5, 11):
        crop = np.ascontiguousarray(crop_fov(data.load_panorama(index), FOV, data.shift_for(index)))
        assert crop.shape == (config.ground_height, config.ground_height, 3)
        record = data.records[index]
        out.append((crop, float(record.ground_lat), float(record.ground_lon)))
    return out


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def photo_folder(tmp_path, crops) -> Path:
    """a.png, b.png, c_gps.jpg (EXIF GPS at its pair's true location), a text file and a hidden file that the walk
    skips, and sub/d.png that only --recursive finds."""
    folder = tmp_path / "photos"
    write_png(folder / "a.png", crops[0][0])
    write_png(folder / "b.png", crops[1][0])
    crop, lat, lon = crops[2]
    Image.fromarray(crop).save(folder / "c_gps.jpg", "JPEG", quality=95, exif=gps_exif(lat, lon))
    (folder / "notes.txt").write_text("not a photo, and not taken by the folder walk\n")
    write_png(folder / ".hidden.png", crops[0][0])
    write_png(folder / "sub" / "d.png", crops[1][0])
    return folder


def run(capsys, *args, checkpoint, database) -> tuple[int, str, str]:
    code = localize.main([*map(str, args), "--checkpoint", str(checkpoint), "--reference-db", str(database),
                          "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(capsys, tiny_checkpoint, tiny_database):
    return lambda *args: run(capsys, *args, checkpoint=tiny_checkpoint, database=tiny_database)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def expected_candidates(localizer, photo, top_k=TOP_K, fov=None):
    return localizer.localize(str(photo), fov_deg=fov, top_k=top_k).candidates


def check_rows_match(rows: list[dict], candidates, file: str, gps=None):
    """CSV rows (strings) of one photo against the Localizer's own candidates."""
    assert [r["file"] for r in rows] == [file] * len(candidates)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(candidates) + 1))
    for row, c in zip(rows, candidates):
        assert float(row["lat"]) == pytest.approx(c.lat, abs=1e-7)
        assert float(row["lon"]) == pytest.approx(c.lon, abs=1e-7)
        assert float(row["heading_deg"]) == pytest.approx(c.heading_deg, abs=0.006)
        assert 0 <= float(row["heading_deg"]) < 360
        assert float(row["score"]) == pytest.approx(c.score, abs=1e-5)
        assert row["error"] == ""
        if gps is None:
            assert row["distance_to_exif_gps_m"] == ""
        else:
            assert float(row["distance_to_exif_gps_m"]) == pytest.approx(great_circle_m(*gps, c.lat, c.lon), abs=0.06)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------------------------------ formats


def test_csv_has_a_row_per_photo_and_rank_matching_the_localizer(cli, photo_folder, localizer, crops, tmp_path):
    out = tmp_path / "results.csv"
    code, stdout, stderr = cli(photo_folder, "--out", out, "--top-k", TOP_K)
    assert code == 0, stderr
    assert stdout == ""  # the results go to the file, the summary to stderr
    assert f"localized 3 of 3 photos (top {TOP_K} each): 9 rows -> {out}" in stderr
    header, rows = read_csv(out)
    assert header == list(COLUMNS)
    files = [str(photo_folder / n) for n in ("a.png", "b.png", "c_gps.jpg")]  # sorted; .txt and hidden skipped
    assert len(rows) == 3 * TOP_K and list(dict.fromkeys(r["file"] for r in rows)) == files
    for i, file in enumerate(files):
        gps = crops[2][1:] if file.endswith("c_gps.jpg") else None
        check_rows_match(rows[i * TOP_K:(i + 1) * TOP_K], expected_candidates(localizer, file), file, gps)
    # the GPS photo: every distance is the distance from its true location, within the 512 m tiny world
    gps_rows = rows[2 * TOP_K:]
    assert all(0 <= float(r["distance_to_exif_gps_m"]) < 800 for r in gps_rows)
    db_latlon = {(round(float(lat), 7), round(float(lon), 7)) for lat, lon in localizer.db.latlon}
    assert {(float(r["lat"]), float(r["lon"])) for r in rows} <= db_latlon  # every answer is a reference tile

    code, _, stderr = cli(photo_folder, "--out", out, "--top-k", 2, "--recursive")
    assert code == 0, stderr
    _, rows = read_csv(out)
    assert len(rows) == 4 * 2 and rows[-1]["file"] == str(photo_folder / "sub" / "d.png")  # rewritten in place
    assert not list(tmp_path.glob(".results.csv.*"))  # the atomic write left no temporary file


def test_json_and_geojson_carry_the_same_rows(cli, photo_folder, tmp_path):
    code, _, stderr = cli(photo_folder, "--out", tmp_path / "r.csv", "--top-k", TOP_K)
    assert code == 0, stderr
    _, csv_rows = read_csv(tmp_path / "r.csv")

    code, _, stderr = cli(photo_folder, "--out", tmp_path / "r.json", "--top-k", TOP_K)
    assert code == 0, stderr
    entries = json.loads((tmp_path / "r.json").read_text())
    assert isinstance(entries, list) and len(entries) == 3 * TOP_K
    assert all(list(e) == list(COLUMNS) for e in entries)  # columns in order, like the CSV
    for entry, row in zip(entries, csv_rows):
        assert isinstance(entry["rank"], int) and isinstance(entry["lat"], float) and entry["error"] is None
        assert entry["file"] == row["file"] and entry["rank"] == int(row["rank"])
        assert entry["lat"] == float(row["lat"]) and entry["lon"] == float(row["lon"])
        assert entry["score"] == float(row["score"]) and entry["heading_deg"] == float(row["heading_deg"])
        assert (entry["distance_to_exif_gps_m"] is None) == (row["distance_to_exif_gps_m"] == "")

    code, _, stderr = cli(photo_folder, "--out", tmp_path / "r.geojson", "--top-k", TOP_K)
    assert code == 0, stderr
    collection = json.loads((tmp_path / "r.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["errors"] == []
    assert len(collection["features"]) == 3 * TOP_K
    for feature, row in zip(collection["features"], csv_rows):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Point"
        assert feature["geometry"]["coordinates"] == [float(row["lon"]), float(row["lat"])]  # [lon, lat] order
        props = feature["properties"]
        assert props["file"] == row["file"] and props["rank"] == int(row["rank"])
        assert props["heading_deg"] == float(row["heading_deg"]) and props["score"] == float(row["score"])
        assert set(props) == set(COLUMNS) - {"lat", "lon", "error"}
    lats = [f["geometry"]["coordinates"][1] for f in collection["features"]]
    assert all(-90 <= lat <= 90 for lat in lats)


def test_without_out_a_table_is_printed(cli, photo_folder, localizer):
    photo = photo_folder / "a.png"
    code, stdout, stderr = cli(photo, "--top-k", 2)
    assert code == 0, stderr
    lines = stdout.rstrip("\n").split("\n")
    assert lines[0].split() == [n for n in COLUMNS]
    assert len(lines) == 1 + 2
    expected = expected_candidates(localizer, photo, top_k=2)
    for line, c in zip(lines[1:], expected):
        file, rank, lat, lon, heading, score = line.split()[:6]
        assert (file, int(rank)) == (str(photo), c.rank)
        assert (float(lat), float(lon)) == (round(c.lat, 7), round(c.lon, 7))
        assert float(score) == pytest.approx(c.score, abs=1e-5)
        assert line[lines[0].index("rank"):].split()[0] == rank  # aligned under its header
        assert line[lines[0].index("score"):].split()[0] == score
    assert "localized 1 of 1 photo (top 2 each): 2 rows" in stderr
    assert "search: exhaustive over 12 references" in stderr  # auto: far below the two-stage threshold


def test_the_search_is_chosen_and_named(cli, photo_folder, localizer, capsys):
    photo = photo_folder / "a.png"
    code, stdout, stderr = cli(photo, "--top-k", 3, "--search", "two-stage", "--rerank", 12)
    assert code == 0, stderr
    assert "search: two-stage (first stage top 12; its recall was not measured" in stderr
    # 12 candidates of 12 references: the first stage passes every one on, so the answers are the exhaustive ones
    expected = expected_candidates(localizer, photo, top_k=3)
    assert [line.split()[:4] for line in stdout.splitlines()[1:]] == [
        [str(photo), str(c.rank), f"{c.lat:.7f}".rstrip("0"), f"{c.lon:.7f}".rstrip("0")] for c in expected]
    with pytest.raises(SystemExit):
        cli(photo, "--search", "fast")
    assert "invalid choice: 'fast'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ failures


def test_bad_files_get_an_error_row_and_the_rest_go_on(cli, crops, tmp_path, localizer):
    folder = tmp_path / "mixed"
    good = write_png(folder / "a_good.png", crops[0][0])
    (folder / "b_not_an_image.jpg").write_text("this is a text file, not a photo\n" * 10)
    png = cv2.imencode(".png", cv2.cvtColor(crops[1][0], cv2.COLOR_RGB2BGR))[1].tobytes()
    (folder / "c_truncated.png").write_bytes(png[: len(png) // 2])
    rows_, cols_ = np.mgrid[0:120, 0:160]
    camera = np.stack([rows_ * 2, cols_ + 40, (rows_ + cols_) // 2], axis=2).astype(np.uint8)
    Image.fromarray(camera).save(folder / "d_no_fov.jpg", "JPEG")  # a camera-like photo without EXIF
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "results.csv"

    code, _, stderr = cli(folder, missing, "--out", out, "--top-k", 2)
    assert code == 1
    _, rows = read_csv(out)
    assert len(rows) == 2 + 4  # the good photo's two ranks, one row for each failure
    check_rows_match(rows[:2], expected_candidates(localizer, good, top_k=2), str(good))
    errors = {Path(r["file"]).name: r["error"] for r in rows[2:]}
    assert "not a recognised image file" in errors["b_not_an_image.jpg"]
    assert "truncated or corrupt" in errors["c_truncated.png"]
    assert errors["d_no_fov.jpg"] == FOV_UNKNOWN
    assert "does not exist" in errors["missing.jpg"]
    for row in rows[2:]:
        assert row["rank"] == row["lat"] == row["lon"] == row["score"] == row["heading_deg"] == ""
    assert "localized 1 of 5 photos" in stderr and "4 failed:" in stderr
    for name in errors:
        assert name in stderr

    # GeoJSON: the failures are listed in "errors", not as features without geometry
    code, _, _ = cli(folder, missing, "--out", tmp_path / "results.geojson", "--top-k", 2)
    assert code == 1
    collection = json.loads((tmp_path / "results.geojson").read_text())
    assert len(collection["features"]) == 2
    assert all(f["geometry"] is not None for f in collection["features"])
    assert sorted(Path(e["file"]).name for e in collection["errors"]) == sorted(errors)
    assert {Path(e["file"]).name: e["error"] for e in collection["errors"]} == errors

    # the photo without a focal length works once --fov gives its field of view
    code, _, stderr = cli(folder / "d_no_fov.jpg", "--out", out, "--top-k", 2, "--fov", 70)
    assert code == 0, stderr
    _, rows = read_csv(out)
    assert len(rows) == 2 and all(r["error"] == "" for r in rows)
    expected = expected_candidates(localizer, folder / "d_no_fov.jpg", top_k=2, fov=70.0)
    check_rows_match(rows, expected, str(folder / "d_no_fov.jpg"))


def test_an_implausible_exif_field_of_view_needs_fov(cli, tmp_path, localizer):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 1  # FocalLengthIn35mmFilm 1 mm: 173.4 deg, no pinhole camera
    photo = tmp_path / "fisheye.jpg"
    rows_, cols_ = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([rows_, cols_, rows_ + cols_], axis=2).astype(np.uint8)).save(photo, exif=exif.tobytes())
    out = tmp_path / "r.json"
    code, _, _ = cli(photo, "--out", out)
    assert code == 1
    (entry,) = json.loads(out.read_text())
    assert "implausible 173.4 deg" in entry["error"] and "pass --fov" in entry["error"]
    code, _, stderr = cli(photo, "--out", out, "--fov", 80, "--top-k", 2)
    assert code == 0, stderr
    entries = json.loads(out.read_text())
    expected = expected_candidates(localizer, photo, top_k=2, fov=80.0)  # --fov replaces the implausible EXIF
    assert [(e["lat"], e["lon"]) for e in entries] == [(round(c.lat, 7), round(c.lon, 7)) for c in expected]


def test_each_photo_is_opened_once(photo_folder, localizer):
    """Its EXIF GPS (the prior and the distance column) and its pixels come from one opening."""
    photo = photo_folder / "c_gps.jpg"
    with opened_files() as opened:
        localized = localize_one(localizer, str(photo), top_k=2, prior=150.0)
    assert localized.error is None and times_opened(opened, photo) == 1
    assert localized.gps is not None and localized.result.prior.source == "exif"
    assert localized.result.searched < len(localizer.db)


def test_bad_arguments_exit_with_status_2(cli, photo_folder, tmp_path, capsys):
    for args in (["--out", tmp_path / "r.txt"], ["--fov", 5], ["--fov", 171], ["--top-k", 0],
                 ["--projection", "fisheye"], ["--out", tmp_path]):
        with pytest.raises(SystemExit) as info:
            cli(photo_folder, *args)
        assert info.value.code == 2, args
    err = capsys.readouterr().err
    assert ".csv, .json, .geojson" in err and "--fov must be between 10 and 170" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = cli(empty)
    assert code == 2 and "no photos in" in stderr and "no photos to localize" in stderr
    code, _, stderr = run(capsys, photo_folder, checkpoint=tmp_path / "nope.safetensors", database=tmp_path / "nodb")
    assert code == 2 and "nope.safetensors" in stderr and "not found" in stderr


def test_a_missing_demo_says_how_to_build_it(tmp_path, monkeypatch, capsys, photo_folder):
    from geoapp.app import bootstrap

    paths = bootstrap.DemoPaths(shipped=tmp_path / "c.safetensors", built=tmp_path / "b.safetensors",
                                database=tmp_path / "db", data_root=tmp_path / "d", run_dir=tmp_path / "r",
                                verification=tmp_path / "v.json")
    monkeypatch.setattr(bootstrap, "DemoPaths", lambda: paths)
    monkeypatch.delenv("GEOAPP_CHECKPOINT", raising=False)
    monkeypatch.delenv("GEOAPP_REFERENCE_DB", raising=False)
    assert localize.main([str(photo_folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the demo is not ready" in err and "python app.py" in err
    assert "python -m geoapp.synth --out" in err and "has not run here" in err


# ------------------------------------------------------------------------------------------ HEIC


def test_heic_photos_go_through_the_cli(cli, crops, tmp_path, localizer):
    pytest.importorskip("pillow_heif")
    from geoapp.data.photo import load_image

    folder = tmp_path / "iphone"
    folder.mkdir()
    for name, (crop, _, _) in zip(("IMG_0001.HEIC", "IMG_0002.heif"), crops):
        Image.fromarray(crop).save(folder / name, format="HEIF", quality=95)
    shutil.copy(folder / "IMG_0001.HEIC", folder / "._IMG_0001.HEIC")  # a macOS resource fork: skipped
    out = tmp_path / "heic.json"
    code, _, stderr = cli(folder, "--out", out, "--top-k", TOP_K)
    assert code == 0, stderr
    entries = json.loads(out.read_text())
    assert [Path(e["file"]).name for e in entries] == ["IMG_0001.HEIC"] * TOP_K + ["IMG_0002.heif"] * TOP_K
    for i, name in enumerate(("IMG_0001.HEIC", "IMG_0002.heif")):
        decoded = load_image(folder / name)
        assert decoded.shape == crops[i][0].shape  # 64 x 64: a panorama-grid crop for the auto projection
        assert np.abs(decoded.astype(int) - crops[i][0]).mean() < 4
        expected = localizer.localize(decoded, top_k=TOP_K).candidates  # the decoded array, straight in
        got = entries[i * TOP_K:(i + 1) * TOP_K]
        assert [(e["lat"], e["lon"]) for e in got] == [(round(c.lat, 7), round(c.lon, 7)) for c in expected]
        assert [e["score"] for e in got] == pytest.approx([c.score for c in expected], abs=1e-5)


# ------------------------------------------------------------------------------------------ pure functions


def test_geojson_and_table_of_hand_made_rows():
    rows = [
        {**dict.fromkeys(COLUMNS), "file": "a.jpg", "rank": 1, "lat": 48.8584, "lon": 2.2945, "heading_deg": 271.5,
         "score": 0.9, "distance_to_exif_gps_m": 12.5, "error": None},
        {**dict.fromkeys(COLUMNS), "file": "broken.jpg", "error": "not a recognised image file"},
    ]
    collection = geojson_collection(rows)
    assert collection["features"][0]["geometry"] == {"type": "Point", "coordinates": [2.2945, 48.8584]}
    assert collection["features"][0]["properties"]["distance_to_exif_gps_m"] == 12.5
    assert collection["errors"] == [{"file": "broken.jpg", "error": "not a recognised image file"}]
    table = format_table(rows).split("\n")
    assert table[0].startswith("file        rank  lat      lon     heading_deg")
    assert table[1].split() == ["a.jpg", "1", "48.8584", "2.2945", "271.5", "0.9", "12.5"]
    assert table[2].split()[0] == "broken.jpg" and table[2].endswith("not a recognised image file")


# ------------------------------------------------------------------------------------------ answers


def test_together_gives_one_combined_answer_with_every_photos_heading(cli, photo_folder, localizer, tmp_path):
    a, b = photo_folder / "a.png", photo_folder / "b.png"
    out = tmp_path / "together.csv"
    code, _, stderr = cli(a, b, "--together", "--out", out, "--top-k", TOP_K)
    assert code == 0, stderr
    _, rows = read_csv(out)
    expected = localizer.localize_together([str(a), str(b)], top_k=TOP_K).candidates
    assert [r["file"] for r in rows] == [f"{a}+{b}"] * TOP_K
    for row, c in zip(rows, expected):
        assert float(row["lat"]) == pytest.approx(c.lat, abs=1e-7) and float(row["score"]) == pytest.approx(
            c.score, abs=1e-5)
        assert [float(h) for h in row["photo_headings_deg"].split()] == pytest.approx(c.view_headings, abs=0.006)
        assert int(row["references_searched"]) == len(localizer.db)
        assert row["confidence"] == ""  # the tiny database has no calibration record
    code, _, stderr = cli(a, "--together")
    assert code == 2 and "--together takes 2 to 6 photos" in stderr


def test_prior_limits_the_search_and_bad_priors_are_refused(cli, capsys, photo_folder, localizer, tmp_path, crops):
    _, lat, lon = crops[2]
    out = tmp_path / "prior.json"
    code, _, stderr = cli(photo_folder, "--prior", f"{lat},{lon}", "--radius", 150, "--out", out, "--top-k", 1)
    assert code == 0, stderr
    entries = json.loads(out.read_text())
    from geoapp.retrieval.prior import LocationPrior, references_within

    inside = references_within(localizer.db.latlon, LocationPrior(lat, lon, 150.0))
    assert 0 < len(inside) < len(localizer.db)
    assert all(e["references_searched"] == len(inside) for e in entries)
    assert all(great_circle_m(lat, lon, e["lat"], e["lon"]) <= 150.0 + 0.01 for e in entries)
    # --prior exif: only the photo with EXIF GPS is restricted, the others search everything
    code, _, stderr = cli(photo_folder, "--prior", "exif", "--radius", 150, "--out", out, "--top-k", 1)
    assert code == 0, stderr
    searched = {Path(e["file"]).name: e["references_searched"] for e in json.loads(out.read_text())}
    assert searched == {"a.png": len(localizer.db), "b.png": len(localizer.db), "c_gps.jpg": len(inside)}
    # a prior outside the database: each photo's row says so, the exit status says it failed
    code, _, stderr = cli(photo_folder / "a.png", "--prior", "0,0", "--radius", 1000)
    assert code == 1 and "location prior: no reference tile lies within 1 km of 0.000000, 0.000000" in stderr
    for args, message in [(("--prior", "north", "--radius", 500), "--prior must be LAT,LON"),
                          (("--prior", "0,0"), "--prior and --radius go together"),
                          (("--prior", "0,0", "--radius", 10), "radius must be between 100 m")]:
        with pytest.raises(SystemExit) as info:
            localize.parse_args([str(photo_folder), *map(str, args)])
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_distinct_places_are_an_option(cli, capsys, photo_folder, localizer, tmp_path, crops):
    out = tmp_path / "places.csv"
    code, _, stderr = cli(photo_folder, "--out", out, "--top-k", 4, "--distinct", 100)
    assert code == 0, stderr
    assert "(top 4 distinct places, no two within 100 m each)" in stderr
    _, rows = read_csv(out)
    moved = 0
    for name in ("a.png", "b.png", "c_gps.jpg"):
        file = str(photo_folder / name)
        mine = [r for r in rows if r["file"] == file]
        expected = localizer.localize(file, top_k=4, distinct_m=100.0).candidates
        check_rows_match(mine, expected, file, crops[2][1:] if name == "c_gps.jpg" else None)
        points = [(float(r["lat"]), float(r["lon"])) for r in mine]
        assert all(great_circle_m(*p, *q) >= 100.0 for i, p in enumerate(points) for q in points[i + 1:])
        moved += [c.index for c in expected] != [c.index for c in localizer.localize(file, top_k=4).candidates]
    assert moved >= 1
    assert len(rows) < 12  # a photo may have fewer than 4 places 100 m apart in the tiny world: fewer rows
    # auto: half the database's 64 m tiles; without the option every tile, as before
    code, _, stderr = cli(photo_folder / "a.png", "--distinct", "auto", "--top-k", 2)
    assert code == 0 and "(top 2 distinct places, no two within 32 m each)" in stderr
    code, _, stderr = cli(photo_folder / "a.png", "--top-k", 2)
    assert code == 0 and "(top 2 each)" in stderr
    for bad, message in (("-1", "--distinct must be between 0 and 10000 metres"),
                         ("near", "--distinct must be a distance in metres or 'auto'")):
        with pytest.raises(SystemExit) as info:
            localize.parse_args([str(photo_folder), "--distinct", bad])
        assert info.value.code == 2 and message in capsys.readouterr().err
