"""Packaging: pyproject.toml against requirements.txt, the console scripts, the licence, and (slow) a wheel built
from the sources, installed into a fresh virtual environment and run from there.

The wheel test downloads nothing: ``pip wheel --no-build-isolation --no-index`` builds with the setuptools of
this environment (requirements-dev.txt), ``pip install --no-deps --no-index`` installs the wheel alone, and a
``.pth`` file makes this environment's site-packages (the dependencies, not the repository) visible to the new
one, so what imports ``geoapp`` there can only be the wheel's copy.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

pytest_plugins = ["app_fixtures"]  # the tiny world, model and database (the installed CLI answers a photo)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "geoapp-train": "geoapp.train:main",
    "geoapp-evaluate": "geoapp.evaluate:main",
    "geoapp-build-db": "geoapp.build_db:main",
    "geoapp-localize": "geoapp.localize:main",
    "geoapp-app": "geoapp.app.main:main",
}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_key(text: str) -> tuple[str, str, str]:
    """(normalised name, sorted specifiers, marker) of a requirement string."""
    req = Requirement(text)
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    return name, ",".join(sorted(str(s) for s in req.specifier)), str(req.marker or "")


def requirements_txt() -> list[tuple[str, str, str]]:
    keys = []
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert not line.startswith("-"), f"requirements.txt has an option line pyproject cannot mirror: {line}"
            keys.append(requirement_key(line))
    return keys


def test_pyproject_dependencies_are_requirements_txt():
    project = pyproject()["project"]
    from_pyproject = [requirement_key(r) for r in project["dependencies"]]
    from_txt = requirements_txt()
    assert len(from_txt) >= 10 and ("gradio", "<7,>=6", "") in from_txt and ("pillow-heif", "", "") in from_txt
    assert sorted(from_pyproject) == sorted(from_txt)
    assert len(set(from_pyproject)) == len(from_pyproject)


def test_build_system_and_console_scripts():
    config = pyproject()
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"
    assert any(requirement_key(r)[0] == "setuptools" for r in config["build-system"]["requires"])
    assert config["project"]["scripts"] == SCRIPTS
    for target in SCRIPTS.values():
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        signature = inspect.signature(main)
        # a console script calls main() with no arguments and exits with what it returns
        assert all(p.default is not inspect.Parameter.empty for p in signature.parameters.values()), target
        assert signature.return_annotation in (int, "int"), target


def test_app_py_is_the_package_app():
    import app
    import geoapp.app.main

    assert app.main is geoapp.app.main.main and app.build_demo is geoapp.app.main.build_demo  # a re-export
    assert len((REPO / "app.py").read_text().splitlines()) < 20  # a thin launcher, the code lives in the package


def test_licence_matches_the_front_matter_and_pyproject():
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License\n") and "Copyright (c) 2026 geoapp developers" in licence
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in licence
    front_matter = (REPO / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert re.search(r"^license: mit\s*$", front_matter, re.MULTILINE)
    project = pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


# ------------------------------------------------------------------------------------------------ the wheel


def source_copy(dest: Path) -> Path:
    """The repository's tracked and new (not ignored) files, copied to ``dest``: the build writes build/ and
    *.egg-info next to its sources, and a copy keeps them (and no built artifact) out of the checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
        files = [f for f in listed if f and (REPO / f).is_file()]
    except (OSError, subprocess.SubprocessError):  # no git: everything but the environments and built things
        skip = {".git", ".venv", "data", "runs", "checkpoints", "reference_db", "test-artifacts", "build"}
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts) and "__pycache__" not in p.parts]
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (f"{command}\n--- stdout\n{result.stdout[-3000:]}\n"
                                    f"--- stderr\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheels")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out,
         source])
    wheels = list(out.glob("geoapp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel only; this environment's site-packages visible through a .pth file."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for path in ours:
        assert not (Path(path) / "geoapp").exists(), f"{path} holds a geoapp of its own: the test would prove nothing"
    (site / "geoapp_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}


@pytest.mark.slow
def test_the_wheel_carries_the_package_its_data_and_the_requirements(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    for module in ("geoapp/__init__.py", "geoapp/localize.py", "geoapp/app/main.py", "geoapp/retrieval/export.py",
                   "geoapp/data/photo.py", "geoapp/model/resnet.py", "geoapp/synth/world.py"):
        assert module in names, module
    for data in ("geoapp/app/static/leaflet/leaflet.js", "geoapp/app/static/leaflet/leaflet.css",
                 "geoapp/app/static/leaflet/LICENSE"):
        assert data in names, data  # the app serves the map offline from these
    assert any(n.startswith(f"{dist_info}/licenses/LICENSE") or n == f"{dist_info}/LICENSE" for n in names)
    assert not any(n.startswith(("tests/", "app.py")) for n in names)
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    extras = [r for r in requires if "extra ==" in r]
    assert sorted(requirement_key(r) for r in requires if r not in extras) == sorted(requirements_txt())
    assert sorted(requirement_key(r.split(";")[0])[0] for r in extras) == ["milvus-lite", "pymilvus"]  # [milvus]
    assert re.search(r"^License-Expression: MIT$", metadata, re.MULTILINE)
    for script, target in SCRIPTS.items():
        assert re.search(rf"^{re.escape(script)} = {re.escape(target)}$", entry_points, re.MULTILINE), script


@pytest.mark.slow
def test_the_installed_console_scripts_run(installed, tmp_path, tiny_world, tiny_checkpoint, tiny_database):
    bin_dir = installed / "bin"
    env = clean_env()
    where = run([bin_dir / "python", "-c", "import geoapp, geoapp.app.mapview as m; print(geoapp.__file__); "
                 "print((m.STATIC_DIR / 'leaflet' / 'leaflet.js').is_file())"], cwd=tmp_path, env=env).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(installed.resolve()), where  # the wheel's copy, not the checkout
    assert where[1] == "True"
    expected = {"geoapp-localize": "PHOTO_OR_FOLDER", "geoapp-app": "--no-build", "geoapp-train": "--preset",
                "geoapp-evaluate": "--checkpoint", "geoapp-build-db": "--tiles"}
    for script, fragment in expected.items():
        result = run([bin_dir / script, "--help"], cwd=tmp_path, env=env)
        assert fragment in result.stdout, (script, result.stdout[-2000:])

    # the installed CLI answers a real photo: a 64 px ground crop of the tiny world, two candidates as GeoJSON
    from PIL import Image

    from geoapp.data.datasets import build_dataset
    from geoapp.data.fov import crop_fov

    data = build_dataset("synth", tiny_world, "test", fov_deg=90.0, train=False, ground_size=(64, None),
                         sat_size=(64, 256))
    Image.fromarray(crop_fov(data.load_panorama(3), 90.0, data.shift_for(3))).save(tmp_path / "crop.png")
    out = tmp_path / "r.geojson"
    result = subprocess.run([str(bin_dir / "geoapp-localize"), str(tmp_path / "crop.png"), "--checkpoint",
                             str(tiny_checkpoint), "--reference-db", str(tiny_database), "--top-k", "2", "--device",
                             "cpu", "--no-progress", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    collection = json.loads(out.read_text())
    assert [f["properties"]["rank"] for f in collection["features"]] == [1, 2] and collection["errors"] == []
    # a broken photo: exit status 1 from the console script too
    (tmp_path / "broken.jpg").write_text("not a photo")
    result = subprocess.run([str(bin_dir / "geoapp-localize"), str(tmp_path / "broken.jpg"), "--checkpoint",
                             str(tiny_checkpoint), "--reference-db", str(tiny_database), "--device", "cpu",
                             "--no-progress"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 1 and "not a recognised image file" in result.stdout + result.stderr
