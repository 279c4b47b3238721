"""geoapp's web app: ``python app.py``, then open the printed address (Hugging Face Spaces run this file).

The app itself is ``geoapp.app.main`` (installed also as ``geoapp-app`` and ``python -m geoapp.app``); see its
docstring for the options.
"""

import sys

from geoapp.app.main import build_demo, main, parse_args, resolve_artifacts

__all__ = ["build_demo", "main", "parse_args", "resolve_artifacts"]

if __name__ == "__main__":
    sys.exit(main())
