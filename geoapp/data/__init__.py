"""Everything the model sees: geometry (polar transform, FoV crops, photo reprojection) and datasets."""
