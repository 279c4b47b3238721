"""Packaging: pyproject.toml against requirements.txt, the lock (requirements.lock) against both, the set-up commands
of the README against .ci/run, the console scripts, the licence, and (slow) a wheel built from the sources, installed
into a fresh virtual environment and run from there, the shipped demo model included.

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
from packaging.version import Version

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


LOCK_LINE = "-c requirements.lock"  # requirements.txt applies the lock to every install from it


def requirement_lines(name: str) -> list[str]:
    """The requirement lines of a requirements file, without comments and without its option lines."""
    lines = [line.split("#", 1)[0].strip() for line in (REPO / name).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def requirements_txt() -> list[tuple[str, str, str]]:
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        assert not line.startswith("-") or line == LOCK_LINE, f"requirements.txt has an option line pyproject cannot " \
                                                             f"mirror: {line}"
    return [requirement_key(line) for line in requirement_lines("requirements.txt")]


def locked() -> dict[str, Version]:
    """requirements.lock: normalised name -> the exact version (every line ``name==version``)."""
    out = {}
    for line in requirement_lines("requirements.lock"):
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker and not req.extras, f"not an exact pin: {line}"
        name = requirement_key(line)[0]
        assert name not in out, f"{name} is locked twice"
        out[name] = Version(spec.version)
    return out


def test_pyproject_dependencies_are_requirements_txt():
    project = pyproject()["project"]
    from_pyproject = [requirement_key(r) for r in project["dependencies"]]
    from_txt = requirements_txt()
    assert len(from_txt) >= 10 and ("gradio", "<7,>=6", "") in from_txt and ("pillow-heif", "", "") in from_txt
    assert sorted(from_pyproject) == sorted(from_txt)
    assert len(set(from_pyproject)) == len(from_pyproject)


def test_the_lock_pins_every_requirement_within_its_range():
    """Every package that requirements*.txt, pyproject.toml (its extras and build system included) ask for is locked, at
    a version their ranges allow, and the lock is applied by requirements.txt (and so by requirements-dev.txt)."""
    assert LOCK_LINE in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    config = pyproject()
    wanted = [*requirement_lines("requirements.txt"), *requirement_lines("requirements-dev.txt"),
              *config["project"]["dependencies"], *config["build-system"]["requires"],
              *(r for extra in config["project"]["optional-dependencies"].values() for r in extra)]
    lock = locked()
    assert len(lock) > 50  # the whole dependency closure, not the direct requirements alone
    for text in wanted:
        req = Requirement(text)
        name = requirement_key(text)[0]
        assert name in lock, f"{text} is not in requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"requirements.lock has {name}=={lock[name]}, " \
                                                                     f"outside {text}"
    # the registry's builds of torch and torchvision (they run on CPU and on GPU), not local +cpu wheels
    assert not lock["torch"].local and not lock["torchvision"].local


def test_the_environment_is_the_locked_one():
    """Every package of the dependency closure of requirements-dev.txt installed here has the locked version: the lock
    is complete, and this environment (CI's, made from it) is the one its figures come from. Fails where a package was
    upgraded by hand; pip install -r requirements-dev.txt puts the locked one back."""
    from importlib.metadata import PackageNotFoundError, distribution

    lock = locked()
    todo = [Requirement(r) for r in requirement_lines("requirements-dev.txt") + requirement_lines("requirements.txt")]
    seen, wrong = set(), []
    while todo:
        req = todo.pop()
        key = (requirement_key(str(req))[0], frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # a platform's dependency that this machine does not need
        if lock.get(key[0]) != Version(dist.version):
            wrong.append(f"{key[0]} {dist.version} installed, {lock.get(key[0])} locked")
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(dep)
    assert len(seen) > 50 and not wrong, wrong


def test_the_readme_set_up_is_what_ci_runs_and_the_space_uses_the_locked_gradio():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", readme.split("## Set-up", 1)[1].split("\n## ", 1)[0], re.DOTALL)
    assert len(blocks) == 2, blocks
    app, tests = blocks
    assert "pip install -r requirements.txt" in app and "pip install -r requirements-dev.txt" in tests
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = [line for line in ci.splitlines() if line.startswith("#  ")]  # the README command, quoted indented
    comment = " ".join(line.lstrip("#").strip().rstrip("\\").strip() for line in command)
    assert comment == tests  # .ci/run says which README command it runs ...
    steps = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd ",
                                                                                                  "export "))]
    assert " && ".join(steps) == tests  # ... and runs exactly its steps
    gradio = str(locked()["gradio"])
    for text in (readme.split("---")[1], (REPO / "docs" / "space_front_matter.yml").read_text(encoding="utf-8")):
        assert re.search(rf"^sdk_version: {re.escape(gradio)}(\s|$)", text, re.MULTILINE), gradio


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
    with zipfile.ZipFile(wheel) as zf:  # the shipped demo model and its world record, byte for byte the repository's
        for name in ("demo.safetensors", "demo.world.json"):
            assert zf.read(f"geoapp/checkpoints/{name}") == (REPO / "checkpoints" / name).read_bytes(), name
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


@pytest.mark.slow
def test_the_installed_package_serves_the_shipped_model(installed, tmp_path):
    """Outside a checkout, the installed package finds the shipped model and its world record in the wheel's copy (the
    same sha256 as the repository's files) and its first start serves that model: with --no-build it stops at the
    world it would render for it, not at a missing checkpoint, nor at a model to train."""
    from geoapp.files import sha256_file

    env = {**clean_env(), "GEOAPP_HOME": str(tmp_path / "home")}
    probe = ("import json, geoapp.app.bootstrap as b, geoapp.files as f, geoapp.model.checkpoint as c; "
             "s = b.SHIPPED_CHECKPOINT; m = c.read_metadata(s); "
             "print(json.dumps({'checkout': f.in_checkout(), 'shipped': str(s), 'sha256': f.sha256_file(s), "
             "'world': f.sha256_file(c.world_record_path(s)), 'world_fits': c.read_world_record(s, m) is not None, "
             "'problem': b.shipped_problem(s), 'home': str(b.HOME), 'database': str(b.DemoPaths().database)}))")
    found = json.loads(run([installed / "bin" / "python", "-c", probe], cwd=tmp_path, env=env).stdout)
    assert found["checkout"] is False and found["problem"] is None and found["world_fits"] is True, found
    assert Path(found["shipped"]).resolve().is_relative_to(installed.resolve()), found  # the wheel's copy
    assert found["sha256"] == sha256_file(REPO / "checkpoints" / "demo.safetensors")
    assert found["world"] == sha256_file(REPO / "checkpoints" / "demo.world.json")
    assert Path(found["database"]) == tmp_path / "home" / "reference_db" / "demo"  # built things go to GEOAPP_HOME
    result = subprocess.run([str(installed / "bin" / "geoapp-app"), "--no-build"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "its step 'synthetic world' has not run here" in said, said[-3000:]
    assert f"--out {tmp_path / 'home' / 'data' / 'synth'} --splits val test --sample train:500" in said
    assert "cannot be used" not in said and "not found" not in said and "demo-quick" not in said
