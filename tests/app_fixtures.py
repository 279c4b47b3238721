"""Session fixtures of the app tests: a tiny world, model, reference database, app context and server.

Load them in a test module with ``pytest_plugins = ["app_fixtures"]``. Everything is built once per test
session in a few seconds: a synthetic world with a handful of locations, a randomly initialised small model
with the demo's configuration (``geoapp.testing.demo_model_config``: gate-corr windows, block 1's shared window, the
gate term) and its reference database; for the several-areas app, a folder of three databases of that world, one
of them built with another model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from app_inputs import TOP_K

# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A 512 m x 512 m synthetic world in the CVUSA layout: 4 train and 12 test locations (no val), 128 px tiles,
    64 x 256 panoramas and polar images, a 512 px mosaic (well under a second to generate)."""
    from geoapp.synth.world import WorldConfig
    from geoapp.synth.writer import ImageOptions, write_dataset

    root = tmp_path_factory.mktemp("app_world") / "synth"
    world = WorldConfig(seed=1, n_train=4, n_val=0, n_test=12, tile_metres=64.0, block_metres=256.0,
                        district_metres=200.0, metres_per_pixel=1.0)
    images = ImageOptions(tile_size=128, pano_height=64, pano_width=256, polar_height=64, polar_width=256,
                          mosaic_size=512)
    write_dataset(root, world, images, workers=1, progress=False, log=lambda message: None)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from geoapp.model import build_model, save_model
    from geoapp.testing import demo_model_config

    torch.manual_seed(0)
    model = build_model(demo_model_config()).eval()
    return save_model(tmp_path_factory.mktemp("app_model") / "tiny.safetensors", model)


@pytest.fixture(scope="session")
def tiny_database(tiny_world, tiny_checkpoint, tmp_path_factory) -> Path:
    from geoapp.model import ModelConfig, read_metadata
    from geoapp.retrieval.build import DatasetSource, build_database

    config = ModelConfig.from_dict(read_metadata(tiny_checkpoint)["model_config"])
    source = DatasetSource("synth", tiny_world, "test", config)  # the app's database: the reported split
    out = tmp_path_factory.mktemp("app_db") / "tiny"
    return build_database(source, tiny_checkpoint, out, show_progress=False)


@pytest.fixture(scope="session")
def localizer(tiny_checkpoint, tiny_database):
    from geoapp.retrieval.engine import Localizer

    return Localizer(tiny_checkpoint, tiny_database, device="cpu")


@pytest.fixture(scope="session")
def app_context(localizer, tmp_path_factory):
    from geoapp.app.context import AppContext

    return AppContext.create(localizer, top_k=TOP_K, cache_dir=tmp_path_factory.mktemp("app_cache"),
                             example_count=3)


@pytest.fixture(scope="session")
def upload_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


def served(app):
    """Serve ``build_demo(app)`` on a free localhost port; yields its URL, then closes it."""
    from geoapp.app.screenshot import free_port
    from geoapp.app.ui import build_demo

    demo = build_demo(app)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="session")
def app_server(app_context):
    """The app's page for the tiny context; yields its URL."""
    yield from served(app_context)


# ------------------------------------------------------------------------------------------ several areas


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory) -> Path:
    """A model of the same configuration with other weights: databases it builds do not fit the tiny model."""
    from geoapp.testing import demo_model_config, random_checkpoint

    return random_checkpoint(tmp_path_factory.mktemp("other_model") / "other.safetensors", demo_model_config(), 5)


@pytest.fixture(scope="session")
def areas_root(tiny_world, tiny_checkpoint, tiny_database, other_checkpoint, tmp_path_factory) -> Path:
    """A folder of three reference databases of the tiny world: ``city-a`` (the test split: the tiny database,
    copied), ``city-b`` (the train split: other tiles) and ``city-c`` (the test split, built with the other
    model: it does not fit)."""
    from geoapp.model import ModelConfig, read_metadata
    from geoapp.retrieval.build import DatasetSource, build_database

    root = tmp_path_factory.mktemp("app_areas")
    shutil.copytree(tiny_database, root / "city-a")
    config = ModelConfig.from_dict(read_metadata(tiny_checkpoint)["model_config"])
    build_database(DatasetSource("synth", tiny_world, "train", config), tiny_checkpoint, root / "city-b",
                   show_progress=False)
    build_database(DatasetSource("synth", tiny_world, "test", config), other_checkpoint, root / "city-c", limit=4,
                   show_progress=False)
    return root


@pytest.fixture(scope="session")
def areas(areas_root, tiny_checkpoint, tmp_path_factory):
    """The served areas of ``areas_root`` (city-a and city-b; city-c refused), as ``python app.py`` loads them."""
    from geoapp.app.areas import Areas, find_databases, load_areas

    localizers, refused = load_areas(tiny_checkpoint, find_databases([areas_root]), device="cpu")
    return Areas.create(localizers, refused, top_k=TOP_K, cache_root=tmp_path_factory.mktemp("areas_cache"),
                        example_count=3)


@pytest.fixture(scope="session")
def areas_server(areas):
    """The several-areas page; yields its URL."""
    yield from served(areas)
