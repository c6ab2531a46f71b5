"""Results out. Every writer goes through napari_anonavila._atomic (temporary file, then rename)."""
