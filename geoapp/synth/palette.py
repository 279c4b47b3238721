"""Colours and materials of the synthetic world, and the cross-view cues they carry.

Every building draws a *family*: a roof colour (seen from above) and a wall colour (seen from the
street) that belong together, so a red-roofed house has cream walls and a green metal roof comes with
pale green walls wherever it is. Fields have distinct crop colours and heights, trees a species colour
(a few autumn trees are strong landmarks), so the same object looks consistent in both views.
"""

from __future__ import annotations

import numpy as np

# Surface kinds stored per world pixel (uint8).
GROUND, ROAD, PAVED, BUILDING, TREE, WATER, FIELD, POOL = range(8)
KIND_NAMES = ("ground", "road", "paved", "building", "tree", "water", "field", "pool")
RAISED_KINDS = (BUILDING, TREE)

# Area types (districts).
URBAN, SUBURBAN, RURAL, FOREST = range(4)
AREA_NAMES = ("urban", "suburban", "rural", "forest")


def _rgb(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


# Residential (suburban houses, farm houses): (roof, wall).
HOUSE_ROOFS = _rgb([
    (168, 78, 58),    # terracotta
    (96, 72, 58),     # dark brown shingle
    (72, 74, 80),     # charcoal
    (158, 158, 154),  # light grey
    (84, 122, 88),    # green metal
    (72, 96, 140),    # blue slate
    (150, 48, 42),    # red metal
    (192, 176, 138),  # beige
])
HOUSE_WALLS = _rgb([
    (226, 204, 172),  # cream
    (176, 134, 96),   # wood tan
    (228, 228, 222),  # white
    (136, 152, 176),  # blue-grey siding
    (186, 208, 174),  # pale green
    (174, 196, 224),  # light blue
    (164, 74, 58),    # red brick
    (218, 184, 104),  # ochre
])

# Urban blocks (flat roofs): (roof, wall).
URBAN_ROOFS = _rgb([
    (150, 150, 148),  # concrete grey
    (210, 210, 206),  # white membrane
    (58, 58, 62),     # tar
    (176, 160, 130),  # gravel
    (92, 120, 80),    # green roof
    (120, 96, 84),    # brown membrane
])
URBAN_WALLS = _rgb([
    (116, 138, 160),  # blue glass
    (202, 196, 184),  # light concrete
    (152, 82, 62),    # brick
    (206, 174, 130),  # sandstone
    (80, 102, 112),   # dark glass
    (172, 120, 96),   # terracotta panels
])

# Barns: (roof, wall).
BARN_ROOFS = _rgb([(90, 92, 96), (150, 150, 150), (70, 100, 70)])
BARN_WALLS = _rgb([(152, 42, 36), (222, 220, 212), (110, 112, 118)])

SILO = _rgb([(196, 198, 200)])[0]

# Crops: colour, height (m), stripe contrast.
CROP_COLOURS = _rgb([
    (204, 178, 102),  # wheat
    (72, 112, 46),    # corn
    (112, 150, 62),   # soybean
    (124, 94, 68),    # ploughed soil
    (132, 152, 82),   # pasture
    (222, 202, 56),   # rapeseed
    (88, 140, 74),    # alfalfa
    (182, 162, 122),  # stubble
])
CROP_HEIGHTS = np.asarray([0.8, 1.0, 0.5, 0.05, 0.2, 0.9, 0.4, 0.1], dtype=np.float32)
CROP_STRIPES = np.asarray([0.06, 0.18, 0.14, 0.22, 0.04, 0.05, 0.10, 0.12], dtype=np.float32)
# Corn and soybean dominate, as in the US Midwest: most farmland is similar greens and browns (hard to
# tell apart), bright rapeseed is a rare landmark.
CROP_WEIGHTS = np.asarray([0.10, 0.26, 0.24, 0.08, 0.14, 0.03, 0.07, 0.08])

# Trees: colour, crown shape (0 dome, 1 cone), relative frequency.
TREE_COLOURS = _rgb([
    (66, 104, 48),    # deciduous green
    (40, 70, 46),     # dark conifer
    (98, 136, 58),    # light green
    (82, 96, 42),     # olive
    (196, 112, 42),   # autumn orange
    (196, 172, 58),   # autumn yellow
    (160, 52, 40),    # red maple
])
TREE_CONE = np.asarray([0, 1, 0, 0, 0, 0, 0], dtype=bool)
TREE_WEIGHTS = np.asarray([0.34, 0.22, 0.2, 0.12, 0.05, 0.04, 0.03])

LAWN = _rgb([(96, 132, 64), (112, 140, 70), (84, 120, 58), (142, 142, 92)])
MEADOW = _rgb([(118, 138, 72)])[0]
FOREST_FLOOR = _rgb([(70, 80, 48)])[0]
ASPHALT = _rgb([(74, 74, 78)])[0]
ASPHALT_OLD = _rgb([(98, 96, 94)])[0]
GRAVEL = _rgb([(158, 146, 122)])[0]
SIDEWALK = _rgb([(170, 166, 158)])[0]
CONCRETE = _rgb([(178, 174, 166)])[0]
PARKING = _rgb([(88, 88, 92)])[0]
PLAZA = _rgb([(160, 150, 136)])[0]
MARKING_WHITE = _rgb([(226, 226, 220)])[0]
MARKING_YELLOW = _rgb([(214, 182, 60)])[0]
WATER_RGB = _rgb([(38, 70, 88)])[0]
POOL_RGB = _rgb([(64, 176, 206)])[0]
ROOFTOP_BOX = _rgb([(190, 190, 186)])[0]

# Sky and haze (the haze colour is also the horizon colour of the sky).
SKY_ZENITH = _rgb([(96, 140, 204)])[0]
SKY_HORIZON = _rgb([(196, 212, 226)])[0]
