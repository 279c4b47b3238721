"""``python -m geoapp.app``: the web app, as ``python app.py`` (see ``geoapp.app.main``)."""

import sys

from geoapp.app.main import main

sys.exit(main())
