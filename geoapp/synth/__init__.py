"""A procedural world that behaves like CVUSA, with exact ground truth.

One coherent world per seed: rolling terrain, lakes and a river, main roads, and districts of four area
types (dense urban blocks, suburbs with gabled houses, farmland with fields and farmsteads, forest),
each with its own street grid, buildings (roof and wall colours from one family, so a building looks
the same from above and from the street), trees, fields and water. For every camera location it renders
a north-up satellite tile (sun shading, cast shadows) and a north-aligned 360 degree ground panorama
from the same 3D scene (height-field ray marching, sky, distance haze); panorama column c looks toward
azimuth c / W * 360 - 180 (conventions §2), so the polar transform of the tile (conventions §3) lines up with it
at shift 0.

Command line: ``python -m geoapp.synth --help``. API::

    from geoapp.synth import WorldConfig, generate_world, render_panorama, render_satellite, write_dataset
    world = generate_world(WorldConfig(seed=0, n_train=100, n_val=10, n_test=20))
    x, y = world.locations.x[0], world.locations.y[0]        # world pixels, x east, y south
    tile = render_satellite(world, x, y)                    # 750 x 750 x 3 RGB
    pano = render_panorama(world, x, y)                     # 128 x 512 x 3 RGB
    lat, lon = world.latlon(x, y)
    write_dataset("data/synth_small", WorldConfig(seed=0, n_train=100, n_val=10, n_test=20))
"""

from geoapp.synth.canvas import WorldCanvas
from geoapp.synth.views import RenderConfig, render_panorama, render_satellite
from geoapp.synth.world import GENERATOR_VERSION, World, WorldConfig, generate_world
from geoapp.synth.writer import ImageOptions, SynthConfigError, write_dataset

__all__ = [
    "GENERATOR_VERSION",
    "ImageOptions",
    "RenderConfig",
    "SynthConfigError",
    "World",
    "WorldCanvas",
    "WorldConfig",
    "generate_world",
    "render_panorama",
    "render_satellite",
    "write_dataset",
]
