"""Dock widgets: score, review, terms, retrain. One magicgui Container (or Qt widget) per module."""
