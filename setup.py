"""The build step pyproject.toml cannot declare: the wheel carries the shipped demo model.

The repository keeps the model in one place, ``checkpoints/`` (``demo.safetensors`` and its world record
``demo.world.json``); ``build_py`` copies them into the built package as ``geoapp/checkpoints/``, where an installed
geoapp finds them (``geoapp.files.shipped_file``). Everything else about the package is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("demo.safetensors", "demo.world.json")  # checkpoints/ -> geoapp/checkpoints/ (geoapp.files.shipped_file)


class BuildPyWithShippedModel(build_py):
    """build_py, then the shipped model copied into the built package; a missing file or a Git LFS pointer in its place
    stops the build with the reason (a wheel without the model would train a weak one at every first start)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "geoapp" / "checkpoints"
        self.mkpath(str(target))
        for name in SHIPPED:
            source = HERE / "checkpoints" / name
            if not source.is_file():
                raise SystemExit(f"error: {source} is missing: the wheel would not carry the shipped demo model "
                                 "(git checkout checkpoints/ restores it)")
            if source.read_bytes()[:40].startswith(b"version https://git-lfs"):
                raise SystemExit(f"error: {source} is a Git LFS pointer, not the file: run git lfs pull first")
            self.copy_file(str(source), str(target / name))


setup(cmdclass={"build_py": BuildPyWithShippedModel})
