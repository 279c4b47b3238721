"""Dataset readers on tiny fake datasets in the CVUSA, CVACT and VIGOR layouts (and the synth manifest)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from geoapp.angles import heading_from_shift
from geoapp.data.cvact import utm_to_latlon
from geoapp.data.datasets import (
    DATASETS,
    DatasetError,
    NoSelectionSplitError,
    SatelliteView,
    build_dataset,
    dataset_kind,
    recorded_dataset,
)
from geoapp.data.fov import crop_fov, eval_shifts
from geoapp.data.polar import polar_transform
from geoapp.data.records import read_rgb
from geoapp.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, resize_image, to_tensor

SMALL_CVUSA = {"panorama_size": [24, 132], "satellite_size": 40}
SMALL_CVACT = {"panorama_size": [32, 64], "satellite_size": [48, 48]}
SMALL_VIGOR = {"panorama_size": [32, 64], "satellite_size": 40}


# ------------------------------------------------------------------------------------ fake datasets


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, seed-specific RGB image (compresses well, survives JPEG recognisably)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 8, 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def cvusa_location(image_id: int) -> list[float]:
    sat_lat, sat_lon = 40.0 + image_id * 1e-3, -75.0 - image_id * 1e-3
    return [sat_lat, sat_lon, sat_lat + 1e-5, sat_lon - 2e-5]


def make_cvusa(root: Path, train_ids=(1, 2), test_ids=(3, 4), pano=(224, 1232), sat=750, manifest=None,
               locations=True, selection_ids=()) -> Path:
    """``selection_ids``: also a model-selection split (selection-19zl.csv), as the synthetic world writes one."""
    all_ids = (*train_ids, *test_ids, *selection_ids)
    for image_id in all_ids:
        name = f"{image_id:07d}"
        write_image(root / "bingmap/19" / f"{name}.jpg", texture(sat, sat, image_id))
        write_image(root / "streetview/panos" / f"{name}.jpg", texture(*pano, 1000 + image_id))
    (root / "splits").mkdir(parents=True)
    tables = {"train": train_ids, "val": test_ids}  # val-19zl.csv: CVUSA's reported ("test") split
    if selection_ids:
        tables["selection"] = selection_ids
    for name, ids in tables.items():
        lines = [f"bingmap/19/{i:07d}.jpg,streetview/panos/{i:07d}.jpg,annotations/{i:07d}.png\n" for i in ids]
        (root / "splits" / f"{name}-19zl.csv").write_text("".join(lines))
    if locations:
        rows = [cvusa_location(i) + [0] for i in range(1, max(all_ids) + 1)]
        (root / "split_locations").mkdir()
        (root / "split_locations/all.csv").write_text("".join(",".join(map(repr, r)) + "\n" for r in rows))
    if manifest is not None:
        (root / "dataset.json").write_text(json.dumps(manifest))
    return root


PANO_IDS = ["__-DFIFxvZBCn1873qkqXA", "__0Ff7mN4yAlkT6vGlo_DA", "__3Z9l2n_bAqLhGm7T4sMw"]
CANBERRA_UTM = np.array([[692000.0, 6092000.0], [692050.5, 6092100.25], [691000.0, 6093000.0]])


def make_cvact(root: Path, pano=(832, 1664), sat=1200, manifest=None, utm=CANBERRA_UTM, cell=False,
               train=(1, 3), val=(2, 3)) -> Path:
    for n, pano_id in enumerate(PANO_IDS):
        write_image(root / "streetview" / f"{pano_id}_grdView.jpg", texture(*pano, 2000 + n))
        write_image(root / "satview_polish" / f"{pano_id}_satView_polish.jpg", texture(sat, sat, 3000 + n))
    ids = np.array(PANO_IDS, dtype=object).reshape(-1, 1) if cell else np.array(PANO_IDS)
    scipy.io.savemat(root / "ACT_data.mat", {
        "panoIds": ids,
        "utm": utm,
        "trainSet": {"trainInd": np.array(train, dtype=np.float64).reshape(-1, 1)},
        "valSet": {"valInd": np.array(val, dtype=np.float64).reshape(-1, 1)},
    })
    if manifest is not None:
        (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def vigor_names(pano_id: str, lat: float, lon: float) -> tuple[str, list[str]]:
    pano_name = f"{pano_id},{lat},{lon},.jpg"
    tiles = [f"satellite_{lat + d}_{lon - d}.png" for d in (1e-4, 3e-4, -2e-4, 5e-4)]
    return pano_name, tiles


def make_vigor(root: Path, cities=None, pano=(1024, 2048), sat=640, manifest=None) -> Path:
    cities = cities or {"NewYork": [("p1", 40.75, -73.98), ("p2", 40.76, -73.97)]}
    for c, (city, panos) in enumerate(cities.items()):
        lines, all_tiles = [], []
        for n, (pano_id, lat, lon) in enumerate(panos):
            pano_name, tiles = vigor_names(pano_id, lat, lon)
            write_image(root / city / "panorama" / pano_name, texture(*pano, 4000 + 10 * c + n))
            write_image(root / city / "satellite" / tiles[0], texture(sat, sat, 5000 + 10 * c + n))
            offsets = ["12.5 -3.25", "100.0 50.0", "-80.5 10.0", "0.0 0.0"]
            lines.append(pano_name + " " + " ".join(f"{t} {o}" for t, o in zip(tiles, offsets)) + "\n")
            all_tiles += tiles
        split_dir = root / "splits" / city
        split_dir.mkdir(parents=True)
        (split_dir / "satellite_list.txt").write_text("\n".join(all_tiles) + "\n")
        (split_dir / "same_area_balanced_train.txt").write_text("".join(lines))
        (split_dir / "same_area_balanced_test.txt").write_text("".join(lines[::-1]))
    if manifest is not None:
        (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def expected_ground(path: Path, fov: float, shift: int, size=(128, 512), rows: slice = slice(None)) -> torch.Tensor:
    pano = resize_image(read_rgb(path)[rows], size)
    return to_tensor(crop_fov(pano, fov, shift))


def expected_satellite(path: Path, size=(128, 512)) -> torch.Tensor:
    return to_tensor(polar_transform(read_rgb(path), *size))


def assert_sample_consistent(sample: dict, fov: float, width: int = 512) -> None:
    assert sample["ground"].dtype == torch.float32 and sample["satellite"].dtype == torch.float32
    assert 0 <= sample["shift"] < width
    assert sample["heading"] == pytest.approx(heading_from_shift(sample["shift"], fov, width))
    assert -180 <= sample["heading"] < 180


# ------------------------------------------------------------------------------------------- CVUSA


def test_cvusa_real_sizes_eval(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    ds = build_dataset("cvusa", root, "test", 90, train=False)
    assert len(ds) == 2
    assert ds.fixed_shifts.tolist() == eval_shifts(2).tolist()
    for index, image_id in enumerate((3, 4)):
        sample = ds[index]
        assert sample["ground"].shape == (3, 128, 128) and sample["satellite"].shape == (3, 128, 512)
        assert sample["shift"] == eval_shifts(2)[index] and sample["index"] == index
        assert_sample_consistent(sample, 90)
        name = f"{image_id:07d}"
        torch.testing.assert_close(
            sample["ground"], expected_ground(root / "streetview/panos" / f"{name}.jpg", 90, sample["shift"]),
            rtol=0, atol=0)
        torch.testing.assert_close(sample["satellite"], expected_satellite(root / "bingmap/19" / f"{name}.jpg"),
                                   rtol=0, atol=0)
        sat_lat, sat_lon, ground_lat, ground_lon = cvusa_location(image_id)  # row id - 1 of all.csv
        assert (sample["lat"], sample["lon"]) == (ground_lat, ground_lon)
        assert ds.satellite_item(index)["lat"] == sat_lat and ds.satellite_item(index)["lon"] == sat_lon
        assert sample["id"] == name
    np.testing.assert_array_equal(ds.locations, [cvusa_location(3)[2:], cvusa_location(4)[2:]])
    assert ds.satellite_locations.shape == (2, 2)


def test_cvusa_real_size_checks_name_file_and_line(tmp_path):
    root = make_cvusa(tmp_path / "cvusa")
    write_image(root / "streetview/panos/0000003.jpg", texture(100, 500, 0))
    with pytest.raises(DatasetError) as info:
        build_dataset("cvusa", root, "test", 90, train=False)
    message = str(info.value)
    assert "0000003.jpg" in message and "224x1232" in message and "100x500" in message
    assert "val-19zl.csv:1" in message
    # A later pair is checked when it is read.
    write_image(root / "bingmap/19/0000002.jpg", texture(700, 700, 0))
    ds = build_dataset("cvusa", root, "train", 90, train=True)
    with pytest.raises(DatasetError, match=r"0000002\.jpg: expected a 750x750 satellite tile.*train-19zl\.csv:2"):
        ds[1]


def test_synth_manifest_sizes_and_reduced_resolution(tmp_path):
    manifest = {**SMALL_CVUSA, "origin": {"lat": 40.0, "lon": -75.0}, "generator": "test"}
    root = make_cvusa(tmp_path / "synth", train_ids=(1, 2, 3), test_ids=(4,), pano=(24, 132), sat=40,
                      manifest=manifest)
    ds = build_dataset("synth", root, "train", 70, train=False, ground_size=(64, None), sat_size=(64, 256))
    assert ds.manifest["origin"] == {"lat": 40.0, "lon": -75.0}
    assert ds.fixed_shifts.tolist() == eval_shifts(3, width=256).tolist()
    sample = ds[2]
    assert sample["ground"].shape == (3, 64, 49) and sample["satellite"].shape == (3, 64, 256)
    assert_sample_consistent(sample, 70, width=256)
    torch.testing.assert_close(
        sample["ground"],
        expected_ground(root / "streetview/panos/0000003.jpg", 70, sample["shift"], size=(64, 256)), rtol=0, atol=0)
    torch.testing.assert_close(
        sample["satellite"], expected_satellite(root / "bingmap/19/0000003.jpg", (64, 256)), rtol=0, atol=0)
    # Without the manifest the real sizes are expected again.
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="224x1232"):
        build_dataset("synth", root, "train", 70, train=False)


def test_cvusa_premade_polar_maps(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    premade = texture(128, 512, 77)
    write_image(root / "polarmap/19/0000003.png", premade)
    ds = build_dataset("cvusa", root, "test", 90, train=False)
    torch.testing.assert_close(ds.satellite_item(0)["satellite"], to_tensor(premade), rtol=0, atol=0)
    torch.testing.assert_close(ds.satellite_item(1)["satellite"],  # no pre-made map: computed
                               expected_satellite(root / "bingmap/19/0000004.jpg"), rtol=0, atol=0)
    reduced = build_dataset("cvusa", root, "test", 90, train=False, sat_size=(64, 256))  # other size: computed
    torch.testing.assert_close(reduced.satellite_item(0)["satellite"],
                               expected_satellite(root / "bingmap/19/0000003.jpg", (64, 256)), rtol=0, atol=0)
    write_image(root / "polarmap/19/0000003.png", texture(64, 256, 0))
    with pytest.raises(DatasetError, match=r"polarmap/19/0000003\.png: expected a 128x512 pre-made polar image"):
        build_dataset("cvusa", root, "test", 90, train=False)


def test_polar_cache(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    ds = build_dataset("cvusa", root, "test", 90, train=False)
    ds.satellite_item(1)
    cached = root / "polar_cache/polar_128x512/bingmap/19/0000004.png"
    assert cached.is_file()
    np.testing.assert_array_equal(read_rgb(cached), polar_transform(read_rgb(root / "bingmap/19/0000004.jpg")))
    assert not list(cached.parent.glob("*.tmp"))
    # The cache is read back ...
    marker = np.full((128, 512, 3), 9, np.uint8)
    write_image(cached, marker)
    torch.testing.assert_close(ds.satellite_item(1)["satellite"], to_tensor(marker), rtol=0, atol=0)
    # ... and refreshed when the tile is newer (a regenerated dataset).
    tile = root / "bingmap/19/0000004.jpg"
    write_image(tile, texture(40, 40, 99))
    os.utime(tile, (cached.stat().st_mtime + 10, cached.stat().st_mtime + 10))
    torch.testing.assert_close(ds.satellite_item(1)["satellite"], expected_satellite(tile), rtol=0, atol=0)
    # Configurable directory, keyed by the polar size; or no cache at all.
    elsewhere = tmp_path / "cache"
    build_dataset("cvusa", root, "test", 90, train=False, sat_size=(64, 256), cache_dir=elsewhere).satellite_item(1)
    assert (elsewhere / "polar_64x256/bingmap/19/0000004.png").is_file()
    other = make_cvusa(tmp_path / "other", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    build_dataset("cvusa", other, "test", 90, train=False, use_cache=False).satellite_item(1)
    assert not (other / "polar_cache").exists()


def test_train_shifts_per_epoch_reproducible(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", train_ids=tuple(range(1, 9)), test_ids=(9,), pano=(24, 132), sat=40,
                      manifest=SMALL_CVUSA)
    ds = build_dataset("cvusa", root, "train", 70, train=True, seed=5)
    assert ds.fixed_shifts is None
    epoch0 = [ds.shift_for(i) for i in range(len(ds))]
    ds.set_epoch(1)
    epoch1 = [ds.shift_for(i) for i in range(len(ds))]
    assert epoch0 != epoch1
    again = build_dataset("cvusa", root, "train", 70, train=True, seed=5)
    assert [again.shift_for(i) for i in range(len(again))] == epoch0
    again.set_epoch(1)
    assert [again[i]["shift"] for i in range(len(again))] == epoch1
    other_seed = build_dataset("cvusa", root, "train", 70, train=True, seed=6)
    assert [other_seed.shift_for(i) for i in range(len(other_seed))] != epoch0
    sample = ds[3]
    assert_sample_consistent(sample, 70)
    torch.testing.assert_close(
        sample["ground"], expected_ground(root / "streetview/panos/0000004.jpg", 70, sample["shift"]), rtol=0, atol=0)
    with pytest.raises(ValueError):
        ds.set_epoch(-1)


def test_explicit_shifts_and_size_arguments(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    ds = build_dataset("cvusa", root, "test", 90, train=False, shifts=[0, 511])
    assert [ds[0]["shift"], ds[1]["shift"]] == [0, 511]
    assert ds[0]["heading"] == -135.0
    with pytest.raises(ValueError, match="2 integers"):
        build_dataset("cvusa", root, "test", 90, train=False, shifts=[1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        build_dataset("cvusa", root, "test", 90, train=False, shifts=[0, 512])
    with pytest.raises(ValueError, match="128 px"):
        build_dataset("cvusa", root, "test", 90, train=False, ground_size=(128, 100))
    assert build_dataset("cvusa", root, "test", 90, train=False, ground_size=(128, 128))[0]["ground"].shape[2] == 128
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("kitti", root, "test", 90, train=False)
    with pytest.raises(ValueError, match="unknown cvusa split"):
        build_dataset("cvusa", root, "everything", 90, train=False)


def test_ground_and_satellite_views_and_dataloader(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA, locations=False)
    ds = build_dataset("cvusa", root, "test", 70, train=False)
    assert np.isnan(ds.locations).all() and ds.locations.shape == (2, 2)
    assert math.isnan(ds[0]["lat"])
    satellites = ds.satellite_view()
    assert isinstance(satellites, SatelliteView) and len(satellites) == 2
    assert set(satellites[1]) == {"satellite", "lat", "lon", "index", "id"}
    assert set(ds.ground_view()[1]) == {"ground", "shift", "heading", "lat", "lon", "index", "id"}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["ground"].shape == (2, 3, 128, 99) and batch["satellite"].shape == (2, 3, 128, 512)
    assert batch["shift"].tolist() == eval_shifts(2).tolist()
    with pytest.raises(IndexError):
        ds[2]


def test_cvusa_split_errors(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    split = root / "splits/val-19zl.csv"
    good = split.read_text()

    def error_for(text: str) -> str:
        split.write_text(text)
        with pytest.raises(DatasetError) as info:
            build_dataset("cvusa", root, "test", 90, train=False)
        return str(info.value)

    message = error_for(good + "bingmap/19/0000001.jpg,streetview/panos/0000001.jpg\n")
    assert "val-19zl.csv:3" in message and "expected 3 comma-separated columns" in message
    message = error_for(good + "/etc/passwd.jpg,streetview/panos/0000001.jpg,a.png\n")
    assert "val-19zl.csv:3" in message and "bad satellite image name" in message
    assert "val-19zl.csv:1" in error_for("bingmap/19/0000003.jpg,streetview/panos/0000003.txt,a.png\n")
    message = error_for(good.replace("0000004.jpg,", "0000005.jpg,", 1))
    assert "val-19zl.csv:2" in message and "0000005.jpg does not exist" in message
    write_image(root / "streetview/panos/pano_x.jpg", texture(24, 132, 0))
    message = error_for(good + "bingmap/19/0000001.jpg,streetview/panos/pano_x.jpg,a.png\n")
    assert "val-19zl.csv:3" in message and "number in the file name" in message
    write_image(root / "streetview/panos/0000099.jpg", texture(24, 132, 0))
    message = error_for(good + "bingmap/19/0000001.jpg,streetview/panos/0000099.jpg,a.png\n")
    assert "val-19zl.csv:3" in message and "no row in" in message
    split.write_text(good)
    (root / "split_locations/all.csv").write_text("1.0,2.0,3.0,4.0\n1.0,north,3.0,4.0\n")
    with pytest.raises(DatasetError, match=r"all\.csv:2: latitude/longitude columns are not numbers"):
        build_dataset("cvusa", root, "test", 90, train=False)
    (root / "split_locations/all.csv").unlink()
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: not a readable JSON manifest"):
        build_dataset("cvusa", root, "test", 90, train=False)
    (root / "dataset.json").write_text(json.dumps({"panorama_size": [24]}))
    with pytest.raises(DatasetError, match=r"dataset\.json: panorama_size must be \[height, width\]"):
        build_dataset("cvusa", root, "test", 90, train=False)
    (root / "dataset.json").write_text(json.dumps(SMALL_CVUSA))
    split.unlink()
    with pytest.raises(DatasetError, match=r"val-19zl\.csv: split file does not exist"):
        build_dataset("cvusa", root, "test", 90, train=False)
    with pytest.raises(DatasetError, match="dataset root does not exist"):
        build_dataset("cvusa", tmp_path / "nowhere", "test", 90, train=False)


def test_skip_missing(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", pano=(24, 132), sat=40, manifest=SMALL_CVUSA)
    (root / "streetview/panos/0000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"val-19zl\.csv:1: image .*0000003\.jpg does not exist"):
        build_dataset("cvusa", root, "test", 90, train=False)
    ds = build_dataset("cvusa", root, "test", 90, train=False, skip_missing=True)
    assert len(ds) == 1 and ds[0]["id"] == "0000004"


# ------------------------------------------------------------------------------------------- CVACT


def utm_inverse_reference(easting: float, northing: float, zone: int, south: bool) -> tuple[float, float]:
    """Independent UTM -> WGS84 (Krueger series to n^3; sub-millimetre in a zone)."""
    a, f = 6378137.0, 1 / 298.257223563
    n = f / (2 - f)
    big_a = a / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    beta = [n / 2 - 2 * n**2 / 3 + 37 * n**3 / 96, n**2 / 48 + n**3 / 15, 17 * n**3 / 480]
    delta = [2 * n - 2 * n**2 / 3 - 2 * n**3, 7 * n**2 / 3 - 8 * n**3 / 5, 56 * n**3 / 15]
    k0 = 0.9996
    xi = (northing - (10_000_000.0 if south else 0.0)) / (k0 * big_a)
    eta = (easting - 500_000.0) / (k0 * big_a)
    xi_p = xi - sum(b * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, b in enumerate(beta, 1))
    eta_p = eta - sum(b * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, b in enumerate(beta, 1))
    chi = math.asin(math.sin(xi_p) / math.cosh(eta_p))
    lat = chi + sum(d * math.sin(2 * j * chi) for j, d in enumerate(delta, 1))
    lon = math.radians(zone * 6 - 183) + math.atan2(math.sinh(eta_p), math.cos(xi_p))
    return math.degrees(lat), math.degrees(lon)


def test_utm_conversion_matches_reference():
    for easting, northing in CANBERRA_UTM:
        lat, lon = utm_to_latlon(easting, northing, 55, south=True)
        ref_lat, ref_lon = utm_inverse_reference(easting, northing, 55, True)
        assert abs(lat - ref_lat) < 1e-7 and abs(lon - ref_lon) < 1e-7
        assert -35.5 < lat < -35.0 and 149.0 < lon < 149.2  # Canberra
    lat, lon = utm_to_latlon(500000.0, 0.0, 33, south=False)
    assert (float(lat), float(lon)) == pytest.approx((0.0, 15.0), abs=1e-9)


def test_cvact_real_sizes(tmp_path):
    root = make_cvact(tmp_path / "cvact")
    ds = build_dataset("cvact", root, "test", 70, train=False)
    assert len(ds) == 2 and [r.id for r in ds.records] == [PANO_IDS[1], PANO_IDS[2]]
    for index, row in enumerate((1, 2)):
        sample = ds[index]
        assert sample["ground"].shape == (3, 128, 99) and sample["satellite"].shape == (3, 128, 512)
        assert sample["shift"] == eval_shifts(2)[index]
        assert_sample_consistent(sample, 70)
        pano_path = root / "streetview" / f"{PANO_IDS[row]}_grdView.jpg"
        torch.testing.assert_close(sample["ground"], expected_ground(pano_path, 70, sample["shift"],
                                                                     rows=slice(208, 624)), rtol=0, atol=0)
        torch.testing.assert_close(
            sample["satellite"], expected_satellite(root / "satview_polish" / f"{PANO_IDS[row]}_satView_polish.jpg"),
            rtol=0, atol=0)
        ref_lat, ref_lon = utm_inverse_reference(*CANBERRA_UTM[row], 55, True)
        assert abs(sample["lat"] - ref_lat) < 1e-5 and abs(sample["lon"] - ref_lon) < 1e-5
        assert ds.satellite_item(index)["lat"] == sample["lat"]
    write_image(root / "satview_polish" / f"{PANO_IDS[1]}_satView_polish.jpg", texture(750, 750, 0))
    expected_message = r"_satView_polish\.jpg: expected a 1200x1200 satellite tile.*valInd entry 1"
    with pytest.raises(DatasetError, match=expected_message):
        build_dataset("cvact", root, "test", 70, train=False)


def test_cvact_manifest_cell_ids_swapped_utm_and_train(tmp_path):
    root = make_cvact(tmp_path / "cvact", pano=(32, 64), sat=48, manifest=SMALL_CVACT, cell=True,
                      utm=CANBERRA_UTM[:, ::-1].copy())
    ds = build_dataset("cvact", root, "train", 90, train=True, seed=3)
    assert [r.id for r in ds.records] == [PANO_IDS[0], PANO_IDS[2]]
    ref_lat, ref_lon = utm_inverse_reference(*CANBERRA_UTM[0], 55, True)
    assert ds.locations[0] == pytest.approx([ref_lat, ref_lon], abs=1e-5)
    sample = ds[1]
    torch.testing.assert_close(sample["ground"], expected_ground(root / "streetview" / f"{PANO_IDS[2]}_grdView.jpg",
                                                                 90, sample["shift"], rows=slice(8, 24)),
                               rtol=0, atol=0)
    north = build_dataset("cvact", root, "train", 90, train=True, utm_south=False)
    assert north.locations[0, 0] > 0  # same numbers in the northern hemisphere
    all_rows = build_dataset("cvact", root, "train", 90, train=True, ground_rows=None)
    torch.testing.assert_close(all_rows[1]["ground"], expected_ground(
        root / "streetview" / f"{PANO_IDS[2]}_grdView.jpg", 90, all_rows[1]["shift"]), rtol=0, atol=0)


def test_cvact_errors(tmp_path):
    def error_for(**kwargs) -> str:
        root = make_cvact(tmp_path / f"cvact{len(list(tmp_path.iterdir()))}", pano=(32, 64), sat=48,
                          manifest=SMALL_CVACT, **kwargs)
        with pytest.raises(DatasetError) as info:
            build_dataset("cvact", root, "test", 90, train=False)
        return str(info.value)

    assert "valSet.valInd entry 2: index 4.0 is not an integer in 1..3" in error_for(val=(1, 4))
    assert "valSet.valInd entry 1: index 0.5" in error_for(val=(0.5,))
    assert "utm must be 3 x 2" in error_for(utm=CANBERRA_UTM[:2])
    assert "neither utm column looks like UTM eastings" in error_for(utm=np.ones((3, 2)))
    root = make_cvact(tmp_path / "missing_image", pano=(32, 64), sat=48, manifest=SMALL_CVACT)
    (root / "streetview" / f"{PANO_IDS[2]}_grdView.jpg").unlink()
    with pytest.raises(DatasetError, match=r"ACT_data\.mat, valSet\.valInd entry 2: image .*_grdView\.jpg does not"):
        build_dataset("cvact", root, "test", 90, train=False)
    (root / "ACT_data.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"ACT_data\.mat: not a readable MATLAB"):
        build_dataset("cvact", root, "test", 90, train=False)
    (root / "ACT_data.mat").unlink()
    with pytest.raises(DatasetError, match=r"ACT_data\.mat: CVACT metadata file does not exist"):
        build_dataset("cvact", root, "test", 90, train=False)
    scipy.io.savemat(root / "ACT_data.mat", {"panoIds": np.array(PANO_IDS), "utm": CANBERRA_UTM})
    with pytest.raises(DatasetError, match="no valSet struct"):
        build_dataset("cvact", root, "test", 90, train=False)
    with pytest.raises(ValueError, match="unknown cvact split"):
        build_dataset("cvact", root, "validation", 90, train=False)


# ------------------------------------------------------------------------------------------- VIGOR


def test_vigor_real_sizes(tmp_path):
    root = make_vigor(tmp_path / "vigor")
    ds = build_dataset("vigor", root, "test", 90, train=False)
    assert len(ds) == 2 and [r.id for r in ds.records] == ["NewYork/p2", "NewYork/p1"]  # split order
    sample = ds[1]
    assert sample["ground"].shape == (3, 128, 128) and sample["satellite"].shape == (3, 128, 512)
    assert sample["shift"] == eval_shifts(2)[1]
    assert_sample_consistent(sample, 90)
    pano_name, tiles = vigor_names("p1", 40.75, -73.98)
    torch.testing.assert_close(sample["ground"], expected_ground(root / "NewYork/panorama" / pano_name, 90,
                                                                 sample["shift"], rows=slice(256, 768)),
                               rtol=0, atol=0)
    torch.testing.assert_close(sample["satellite"], expected_satellite(root / "NewYork/satellite" / tiles[0]),
                               rtol=0, atol=0)
    assert (sample["lat"], sample["lon"]) == (40.75, -73.98)
    sat = ds.satellite_item(1)
    assert (sat["lat"], sat["lon"]) == (40.75 + 1e-4, -73.98 - 1e-4)
    assert ds.records[1].extra == {"city": "NewYork", "positive_offset_px": (12.5, -3.25)}
    write_image(root / "NewYork/panorama" / pano_name, texture(512, 1024, 0))
    with pytest.raises(DatasetError, match=r"expected a 1024x2048 ground panorama, got 512x1024.*_test\.txt:2"):
        ds[1]


def test_vigor_cities(tmp_path):
    cities = {
        "Chicago": [("c1", 41.88, -87.63)],
        "NewYork": [("n1", 40.75, -73.98), ("n2", 40.76, -73.97)],
    }
    root = make_vigor(tmp_path / "vigor", cities=cities, pano=(32, 64), sat=40, manifest=SMALL_VIGOR)
    ds = build_dataset("vigor", root, "train", 70, train=True)
    assert ds.cities == ["NewYork", "Chicago"]  # VIGOR's order, not alphabetical
    assert [r.id for r in ds.records] == ["NewYork/n1", "NewYork/n2", "Chicago/c1"]
    assert ds[2]["ground"].shape == (3, 128, 99)
    assert ds.locations[2].tolist() == [41.88, -87.63]
    only = build_dataset("vigor", root, "test", 70, train=False, cities="Chicago")
    assert len(only) == 1 and only.records[0].id == "Chicago/c1"
    with pytest.raises(DatasetError, match=r"splits/Seattle/same_area_balanced_test\.txt: split file does not exist"):
        build_dataset("vigor", root, "test", 70, train=False, cities=["Seattle"])


def test_vigor_label_errors(tmp_path):
    root = make_vigor(tmp_path / "vigor", pano=(32, 64), sat=40, manifest=SMALL_VIGOR)
    label = root / "splits/NewYork/same_area_balanced_test.txt"
    good = label.read_text()
    first = good.splitlines()[0].split()

    def error_for(fields: list[str]) -> str:
        label.write_text(good + " ".join(fields) + "\n")
        with pytest.raises(DatasetError) as info:
            build_dataset("vigor", root, "test", 90, train=False)
        return str(info.value)

    assert "_test.txt:3: expected 13 whitespace-separated fields" in error_for(first[:10])
    assert "_test.txt:3: bad panorama name 'p9_40.7_-73.9.jpg'" in error_for(["p9_40.7_-73.9.jpg"] + first[1:])
    assert "_test.txt:3: bad satellite name 'sat.png'" in error_for(first[:4] + ["sat.png"] + first[5:])
    assert "_test.txt:3: bad pixel offset 'up' '1.0'" in error_for(first[:2] + ["up", "1.0"] + first[4:])
    unknown = "satellite_1.0_2.0.png"
    assert "is not listed in" in error_for(first[:1] + [unknown] + first[2:])
    (root / "splits/NewYork/satellite_list.txt").unlink()  # without the list, the tile file must exist
    assert "_test.txt:3: image" in error_for(first[:1] + [unknown] + first[2:])
    (root / "splits/NewYork/same_area_balanced_test.txt").unlink()
    (root / "splits/NewYork/same_area_balanced_train.txt").unlink()
    with pytest.raises(DatasetError, match="no city has a same_area_balanced_test.txt label file"):
        build_dataset("vigor", root, "test", 90, train=False)


# ----------------------------------------------------------------------------- split names and subsets


def test_split_names_mean_one_thing_in_every_layout(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", train_ids=(1, 2, 3), test_ids=(4, 5), pano=(24, 132), sat=40,
                      manifest=SMALL_CVUSA)
    assert [r.id for r in build_dataset("cvusa", root, "test", 90, train=False).records] == ["0000004", "0000005"]
    for name, kind in (("cvusa", "cvusa"), ("synth", "synth")):  # no selection-19zl.csv: real CVUSA has none
        with pytest.raises(NoSelectionSplitError, match=rf"this {kind} dataset has no model-selection split.*"
                                                        r"'test' \(splits/val-19zl\.csv\).*carves"):
            build_dataset(name, root, "val", 90, train=False)
    (root / "splits/selection-19zl.csv").write_text("bingmap/19/0000003.jpg,streetview/panos/0000003.jpg,a.png\n")
    val = build_dataset("synth", root, "val", 90, train=False)
    assert [r.id for r in val.records] == ["0000003"] and val.records[0].source.endswith("selection-19zl.csv:1")
    cvact = make_cvact(tmp_path / "cvact", pano=(32, 64), sat=48, manifest=SMALL_CVACT)
    assert [r.id for r in build_dataset("cvact", cvact, "test", 90, train=False).records] == PANO_IDS[1:]
    with pytest.raises(NoSelectionSplitError, match=r"cvact dataset has no model-selection split.*valSet"):
        build_dataset("cvact", cvact, "val", 90, train=False)
    vigor = make_vigor(tmp_path / "vigor", pano=(32, 64), sat=40, manifest=SMALL_VIGOR)
    assert len(build_dataset("vigor", vigor, "test", 90, train=False)) == 2
    with pytest.raises(NoSelectionSplitError, match=r"vigor dataset has no model-selection split.*_test\.txt"):
        build_dataset("vigor", vigor, "val", 90, train=False)
    assert issubclass(NoSelectionSplitError, DatasetError)


def test_subset_restricts_records_positions_and_shifts(tmp_path):
    root = make_cvusa(tmp_path / "cvusa", train_ids=tuple(range(1, 9)), test_ids=(9,), pano=(24, 132), sat=40,
                      manifest=SMALL_CVUSA)
    ds = build_dataset("cvusa", root, "train", 90, train=True, seed=4)
    assert ds.tile_metres == 150.0  # CVUSA's approximate footprint; a manifest's geometry.tile_metres wins
    part = ds.subset([6, 1, 3], split="train[selection]", train=False)
    assert [r.id for r in part.records] == ["0000007", "0000002", "0000004"] and len(part) == 3
    assert (part.split, part.subset_of, part.train) == ("train[selection]", "train", False)
    np.testing.assert_array_equal(part.locations, ds.locations[[6, 1, 3]])
    assert part.fixed_shifts.tolist() == eval_shifts(3).tolist()  # conventions §4 shifts of the subset's own order
    assert part[1]["id"] == "0000002" and part[1]["shift"] == eval_shifts(3)[1]
    torch.testing.assert_close(part[1]["satellite"], ds[1]["satellite"], rtol=0, atol=0)
    kept = ds.subset([0, 2, 4, 5, 7])  # still training: per-epoch shifts of the subset's own indices
    assert kept.train and kept.fixed_shifts is None and kept.split == "train[subset]"
    assert [kept.shift_for(i) for i in range(5)] == [int(np.random.default_rng([4, 0, i]).integers(0, 512))
                                                      for i in range(5)]
    assert len(ds) == 8 and ds.train  # the source is unchanged
    fixed = build_dataset("cvusa", root, "train", 90, train=False, shifts=list(range(10, 18)))
    assert fixed.subset([5, 2]).fixed_shifts.tolist() == [15, 12]  # explicit shifts stay with their pairs
    with pytest.raises(IndexError):
        ds.subset([8])
    manifest = {**SMALL_CVUSA, "geometry": {"tile_metres": 64.0}}
    (root / "dataset.json").write_text(json.dumps(manifest))
    assert build_dataset("cvusa", root, "train", 90, train=True).tile_metres == 64.0


# --------------------------------------------------------------------------------- the registry's contract
# Every member of DATASETS keeps these promises on a tiny planted copy of its layout; a new member is covered once it
# has a planter (test_every_member_has_a_planter fails until it does).

CONVENTION_SPLITS = ("train", "val", "test")  # conventions §7, in this order
CVUSA_IDS = {"train": ["0000001", "0000002", "0000003"], "val": ["0000006"], "test": ["0000005", "0000004"]}


def plant_cvusa(root: Path, selection: bool = True, manifest: dict = SMALL_CVUSA) -> dict[str, list[str]]:
    make_cvusa(root, train_ids=(1, 2, 3), test_ids=(5, 4), pano=(24, 132), sat=40, manifest=manifest,
               selection_ids=(6,) if selection else ())
    return CVUSA_IDS if selection else {k: v for k, v in CVUSA_IDS.items() if k != "val"}


def plant_synth(root: Path, selection: bool = True) -> dict[str, list[str]]:
    # geoapp.synth lists every split as rendered, "val" too when it has no locations (--val 0)
    manifest = {**SMALL_CVUSA, "generator": "test", "rendered_splits": list(CONVENTION_SPLITS)}
    return plant_cvusa(root, selection, manifest=manifest)


def plant_cvact(root: Path, selection: bool = True) -> dict[str, list[str]]:
    make_cvact(root, pano=(32, 64), sat=48, manifest=SMALL_CVACT)  # CVACT never lists a selection split
    return {"train": [PANO_IDS[0], PANO_IDS[2]], "test": [PANO_IDS[1], PANO_IDS[2]]}


def plant_vigor(root: Path, selection: bool = True) -> dict[str, list[str]]:
    make_vigor(root, pano=(32, 64), sat=40, manifest=SMALL_VIGOR)  # nor does VIGOR
    return {"train": ["NewYork/p1", "NewYork/p2"], "test": ["NewYork/p2", "NewYork/p1"]}


PLANTERS = {"cvusa": plant_cvusa, "synth": plant_synth, "cvact": plant_cvact, "vigor": plant_vigor}
MEMBERS = sorted(DATASETS)


def test_every_member_has_a_planter():
    assert set(PLANTERS) == set(DATASETS), "plant a tiny copy of every registered layout (PLANTERS)"


def test_names_are_looked_up_once_at_the_edge():
    with pytest.raises(ValueError, match="unknown dataset 'kitti'; expected one of") as info:
        dataset_kind("kitti")
    assert all(f"{name} ({DATASETS[name].layout})" in str(info.value) for name in MEMBERS)
    assert recorded_dataset("kitti") is None and recorded_dataset(None) is None


@pytest.mark.parametrize("name", MEMBERS)
def test_member_describes_its_layout(name):
    kind = DATASETS[name]
    assert kind.name == name and dataset_kind(name.upper()) is kind and recorded_dataset(name) is kind
    assert kind.layout and kind.test_source and isinstance(kind.synthetic, bool)
    assert {"train", "test"} <= set(kind.splits)
    assert list(kind.splits) == [split for split in CONVENTION_SPLITS if split in kind.splits]
    sizes = kind.default_sizes
    assert all(h > 0 and w > 0 for h, w in (sizes.panorama, sizes.satellite, sizes.polar))
    assert kind.default_tile_metres > 0


@pytest.mark.parametrize("name", MEMBERS)
def test_member_opens_every_split_as_documented_samples(name, tmp_path):
    kind, root = DATASETS[name], tmp_path / name
    planted = PLANTERS[name](root)
    assert tuple(planted) == kind.splits  # the planter plants every split the layout can list
    for split, ids in planted.items():
        ds = build_dataset(name, root, split, 90, train=False, ground_size=(32, None), sat_size=(32, 128))
        assert isinstance(ds, kind) and [r.id for r in ds.records] == ids  # split order
        assert ds.fixed_shifts.tolist() == eval_shifts(len(ids), width=128).tolist()
        assert ds.locations.shape == ds.satellite_locations.shape == (len(ids), 2)
        assert ds.tile_metres == kind.default_tile_metres and ds.ground_rows == kind.default_ground_rows
        last = len(ids) - 1
        sample = ds[last]
        # ground: H_g x fov_width(90, 128); satellite: the polar H_s x W
        assert sample["ground"].shape == (3, 32, 32) and sample["satellite"].shape == (3, 32, 128)
        assert_sample_consistent(sample, 90, width=128)
        assert (sample["index"], sample["id"]) == (last, ids[last]) and sample["shift"] == ds.fixed_shifts[last]
        assert isinstance(sample["lat"], float) and isinstance(sample["lon"], float)
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ids))))
        assert batch["ground"].shape == (len(ids), 3, 32, 32) and batch["satellite"].dtype == torch.float32
        assert set(ds.satellite_view()[0]) == {"satellite", "lat", "lon", "index", "id"}


@pytest.mark.parametrize("name", MEMBERS)
def test_member_refuses_bad_input_with_what_it_accepts(name, tmp_path):
    kind, root = DATASETS[name], tmp_path / name
    PLANTERS[name](root, selection=False)
    with pytest.raises(DatasetError, match=r"nowhere: dataset root does not exist or is not a directory"):
        build_dataset(name, tmp_path / "nowhere", "test", 90, train=False)
    accepted = ", ".join(kind.splits)
    with pytest.raises(ValueError, match=rf"unknown {name} split 'everything'; expected one of {accepted}$"):
        build_dataset(name, root, "everything", 90, train=False)
    # A copy without a model-selection split says where its reported split is and what to do instead.
    with pytest.raises(NoSelectionSplitError, match=rf"this {name} dataset has no model-selection split.*"
                                                    rf"{re.escape(kind.test_source)}.*carves"):
        build_dataset(name, root, "val", 90, train=False)
    # Without its manifest, a copy must have the real dataset's sizes, and the error says which.
    (root / "dataset.json").unlink()
    height, width = kind.default_sizes.panorama
    with pytest.raises(DatasetError, match=rf"expected a {height}x{width} ground panorama"):
        build_dataset(name, root, "test", 90, train=False)


# -------------------------------------------------------------------------------------- transforms


def test_to_tensor_normalisation_and_denormalize_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[:, 2, 3].numpy(), (image[2, 3] / 255 - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(denormalize(tensor), image)
    np.testing.assert_array_equal(denormalize(torch.stack([tensor, tensor])), np.stack([image, image]))
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        to_tensor(image.astype(np.float32))


def test_resize_interpolation_follows_direction():
    image = texture(40, 60, 1)
    np.testing.assert_array_equal(resize_image(image, (20, 30)),
                                  cv2.resize(image, (30, 20), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize_image(image, (80, 90)),
                                  cv2.resize(image, (90, 80), interpolation=cv2.INTER_LINEAR))
    mixed = resize_image(image, (80, 30))  # taller but narrower: area across, linear down
    expected = cv2.resize(cv2.resize(image, (30, 40), interpolation=cv2.INTER_AREA), (30, 80),
                          interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(mixed, expected)
    assert resize_image(image, (40, 60)) is image
    assert resize_image(image[:, :, :1], (20, 30)).shape == (20, 30, 1)
