"""Where built things go: GEOAPP_HOME, a Space's persistent /data, the checkout, or ~/.geoapp when installed."""

from pathlib import Path

from geoapp import files


def test_home_dir_follows_the_documented_order(monkeypatch, tmp_path):
    monkeypatch.delenv("GEOAPP_HOME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert files.home_dir() == files.REPO_ROOT  # a checkout (it has pyproject.toml)
    monkeypatch.setenv("GEOAPP_HOME", str(tmp_path / "elsewhere"))
    assert files.home_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("GEOAPP_HOME")
    storage = tmp_path / "data"
    storage.mkdir()
    monkeypatch.setattr(files, "SPACE_STORAGE", storage)
    monkeypatch.setenv("SPACE_ID", "someone/geoapp")
    assert files.home_dir() == storage / "geoapp"  # a Space with persistent storage
    monkeypatch.delenv("SPACE_ID")
    # installed from a wheel: the package's parent is site-packages, not a checkout
    monkeypatch.setattr(files, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert files.home_dir() == Path(tmp_path / "user" / ".geoapp")
