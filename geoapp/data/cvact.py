"""CVACT reader (ANU_data_small: the train split and CVACT_val).

Layout under the root::

    streetview/<id>_grdView.jpg               north-aligned panoramas, 832 x 1664 (full sphere)
    satview_polish/<id>_satView_polish.jpg    satellite tiles, 1200 x 1200
    ACT_data.mat                              panoIds (N ids), utm (N x 2), trainSet.trainInd,
                                              valSet.valInd (1-based indices into panoIds)
    dataset.json                              optional manifest declaring other image sizes

Splits (conventions §7): "train" -> trainSet.trainInd; "test" -> valSet.valInd (CVACT_val, the split CVACT results
are reported on). CVACT has no model-selection split: "val" raises
:class:`~geoapp.data.base.NoSelectionSplitError` (training carves a selection subset from "train").

Panoramas are cut to rows [208, 624) (the middle half, conventions §2) before resizing. One UTM position per
pair serves as both the ground and the satellite location; it is converted to WGS84 lat/lon with pyproj
(zone 55 south by default: Canberra). The column order of ``utm`` (easting, northing) is detected from
the values by default, because easting is the only coordinate bounded to [100 km, 900 km].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from pyproj import Transformer

from geoapp.data.base import CrossViewDataset
from geoapp.data.records import DatasetError, ImageSizes, PairRecord

MAT_FILE = "ACT_data.mat"
SPLIT_INDICES = {"train": ("trainSet", "trainInd"), "test": ("valSet", "valInd")}
EASTING_RANGE_M = (100_000.0, 900_000.0)  # UTM false easting 500 km +- 400 km covers every zone


def utm_to_latlon(easting, northing, zone: int = 55, south: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 latitude and longitude (degrees) of UTM coordinates (metres) in ``zone``."""
    if not 1 <= int(zone) <= 60:
        raise ValueError(f"UTM zone must be in 1..60, got {zone}")
    epsg = (32700 if south else 32600) + int(zone)
    transformer = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    lon, lat = transformer.transform(np.asarray(easting, dtype=np.float64), np.asarray(northing, dtype=np.float64))
    return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


def _mat_strings(value, where: str) -> list[str]:
    """panoIds as scipy.io.loadmat returns it: a char matrix (array of str) or a cell array (object array)."""
    array = np.asarray(value)
    if array.dtype.kind in "US":
        return [str(s).strip() for s in array.ravel()]
    if array.dtype == object:
        ids = []
        for entry, cell in enumerate(array.ravel(), 1):
            flat = np.asarray(cell).ravel()
            if flat.size != 1 or flat.dtype.kind not in "US":
                raise DatasetError(f"{where}: panoIds entry {entry} is not a string")
            ids.append(str(flat[0]).strip())
        return ids
    raise DatasetError(f"{where}: panoIds must be a char matrix or a cell array of strings, got {array.dtype}")


def _struct_field(mat: dict, struct_name: str, field_name: str, where: str) -> np.ndarray:
    """``mat[struct_name].field_name`` of a MATLAB struct as loadmat reads it (a 1 x 1 record array)."""
    if struct_name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{where}: no {struct_name} struct (found {found})")
    struct = np.asarray(mat[struct_name])
    if struct.dtype.names is None or field_name not in struct.dtype.names:
        raise DatasetError(f"{where}: {struct_name} has no field {field_name} (fields: {struct.dtype.names})")
    return np.asarray(struct[field_name].ravel()[0])


class CVACTDataset(CrossViewDataset):
    """CVACT pairs (layout in the module docstring). Besides the :class:`CrossViewDataset` arguments:
    ``utm_zone`` (default 55), ``utm_south`` (default True), ``utm_order`` ("auto", "en" for
    easting/northing columns or "ne")."""

    name = "cvact"
    layout = "CVACT's ANU_data_small (the train split and CVACT_val)"
    splits = tuple(SPLIT_INDICES)
    test_source = f"{MAT_FILE} valSet.valInd, CVACT_val"
    default_sizes = ImageSizes(panorama=(832, 1664), satellite=(1200, 1200))
    default_ground_rows = (0.25, 0.75)  # rows [208, 624) of 832 (conventions §2)

    def __init__(self, *args, utm_zone: int = 55, utm_south: bool = True, utm_order: str = "auto", **kwargs):
        if utm_order not in ("auto", "en", "ne"):
            raise ValueError(f"utm_order must be 'auto', 'en' or 'ne', got {utm_order!r}")
        self.utm_zone = int(utm_zone)
        self.utm_south = bool(utm_south)
        self.utm_order = utm_order
        super().__init__(*args, **kwargs)

    def read_records(self) -> list[PairRecord]:
        mat_path = self.root / MAT_FILE
        mat = self._load_mat(mat_path)
        if "panoIds" not in mat or "utm" not in mat:
            raise DatasetError(f"{mat_path}: needs the variables panoIds and utm")
        pano_ids = _mat_strings(mat["panoIds"], str(mat_path))
        for entry, pano_id in enumerate(pano_ids, 1):
            if not pano_id or "/" in pano_id or "\\" in pano_id or pano_id.startswith("."):
                raise DatasetError(f"{mat_path}: panoIds entry {entry} is not a usable image id: {pano_id!r}")
        utm = np.asarray(mat["utm"], dtype=np.float64)
        if utm.shape != (len(pano_ids), 2):
            raise DatasetError(f"{mat_path}: utm must be {len(pano_ids)} x 2 (one row per panoId), got {utm.shape}")
        lat, lon = self._utm_latlon(utm, mat_path)

        struct_name, field_name = SPLIT_INDICES[self.split]
        indices = _struct_field(mat, struct_name, field_name, str(mat_path)).ravel()
        records = []
        for entry, value in enumerate(indices, 1):
            source = f"{mat_path}, {struct_name}.{field_name} entry {entry}"
            if not (float(value).is_integer() and 1 <= value <= len(pano_ids)):
                raise DatasetError(f"{source}: index {value} is not an integer in 1..{len(pano_ids)}")
            row = int(value) - 1
            pano_id = pano_ids[row]
            records.append(PairRecord(
                id=pano_id,
                ground_path=self.root / "streetview" / f"{pano_id}_grdView.jpg",
                satellite_path=self.root / "satview_polish" / f"{pano_id}_satView_polish.jpg",
                source=source,
                ground_lat=float(lat[row]),
                ground_lon=float(lon[row]),
                satellite_lat=float(lat[row]),
                satellite_lon=float(lon[row]),
            ))
        return records

    @staticmethod
    def _load_mat(mat_path: Path) -> dict:
        if not mat_path.is_file():
            raise DatasetError(f"{mat_path}: CVACT metadata file does not exist")
        try:
            return scipy.io.loadmat(mat_path)
        except NotImplementedError as exc:  # scipy reads MATLAB v4-v7.2; v7.3 files are HDF5
            raise DatasetError(
                f"{mat_path}: MATLAB v7.3 files are not supported; re-save with save(..., '-v7')"
            ) from exc
        except Exception as exc:  # scipy raises ValueError/TypeError/OSError for damaged files
            raise DatasetError(f"{mat_path}: not a readable MATLAB .mat file ({exc})") from exc

    def _utm_latlon(self, utm: np.ndarray, mat_path: Path) -> tuple[np.ndarray, np.ndarray]:
        order = self.utm_order
        if order == "auto":
            def looks_like_easting(column: np.ndarray) -> bool:
                return bool(np.all((column >= EASTING_RANGE_M[0]) & (column <= EASTING_RANGE_M[1])))

            if looks_like_easting(utm[:, 0]):
                order = "en"
            elif looks_like_easting(utm[:, 1]):
                order = "ne"
            else:
                raise DatasetError(f"{mat_path}: neither utm column looks like UTM eastings (100-900 km); "
                                   "pass utm_order='en' or 'ne'")
        easting, northing = (utm[:, 0], utm[:, 1]) if order == "en" else (utm[:, 1], utm[:, 0])
        return utm_to_latlon(easting, northing, self.utm_zone, self.utm_south)
