"""geoapp's web app: the Gradio page (``ui``), its handlers, pictures (``render``), map (``mapview``), the
bundled examples and the first-start demo builder (``bootstrap``). ``python app.py`` starts it."""
