"""geoapp's web app: the Gradio page (``ui``), its handlers, pictures (``figures``), map (``mapview``), the
bundled examples and the first-start demo builder (``bootstrap``). ``python app.py`` starts it."""
