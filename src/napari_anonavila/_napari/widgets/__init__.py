"""Dock widgets: score, review, terms, retrain, QA, and all of them in one tabbed panel."""

from __future__ import annotations

__all__ = ["row_table", "scroll_form", "set_progress", "tabify_when_docked", "wrapping"]

DOCK_WIDTH = (360, 480)  # a docked panel's width: a third of the window, within these bounds (pixels)
# napari names a dock "<widget> (<plugin>)": the package name from the API, the display name from the menu
_DOCK_SUFFIXES = ("(napari-anonavila)", "(Ano-NAViLa anomaly detection)")


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` as it is: Qt renders tooltips that look like HTML as rich text, so the text is
    escaped inside a paragraph."""
    import html

    return f"<p style='white-space:pre-wrap'>{html.escape(str(text))}</p>"


def wrapping(label):
    """Let a magicgui Label (or a QLabel) wrap its text instead of widening its dock, and show it as plain text
    (messages quote file names, terms and errors from files: never links or images)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    native = getattr(label, "native", label)
    native.setTextFormat(Qt.TextFormat.PlainText)
    native.setWordWrap(True)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    native.setMinimumWidth(120)
    return label


def set_progress(bar, value: int, maximum: int | None = None, label: str | None = None) -> None:
    """Move a magicgui ProgressBar to ``value`` (of ``maximum``) and retitle it, drawn with the next frame.

    ``QProgressBar.setValue`` repaints at once, and in napari's window that paint composes the OpenGL canvas: a
    worker's progress event then drew the whole scene inside its handler (0.35 s on software OpenGL after a layer
    was added), once per queued event. With updates off while it is set, the bar waits for the next frame.
    """
    native = bar.native
    native.setUpdatesEnabled(False)
    try:
        if label is not None:
            bar.label = label
        if maximum is not None:
            bar.max = maximum
        bar.value = value
    finally:
        native.setUpdatesEnabled(True)  # (this schedules the bar's paint)


def row_table(table, columns):
    """Set up a QTableWidget as a read-only list of rows: headers ``columns``, one row selected at a time."""
    from qtpy.QtWidgets import QAbstractItemView

    table.setHorizontalHeaderLabels(list(columns))
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def scroll_form(owner, widgets: list, extra=()):
    """Put ``widgets`` (magicgui) and ``extra`` (Qt) in a vertically scrolling form inside ``owner`` (a Container).

    napari docks a magicgui widget by its inner ``native`` widget, which bypasses magicgui's own scroll area; this
    scroll area sits inside that widget, so a dock can shrink to a few rows and several docks fit on one screen.
    Returns the form (a magicgui Container holding ``widgets``).
    """
    from magicgui.widgets import Container
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea

    form = Container(widgets=widgets)
    for w in extra:
        form.native.layout().addWidget(w)
    form.native.layout().addStretch(1)  # rows keep their height; the space left is at the bottom
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(form.native)
    area.setMinimumWidth(320)
    owner.native.layout().setContentsMargins(0, 0, 0, 0)
    owner.native.layout().addWidget(area)
    return form


def tabify_when_docked(widget) -> None:
    """Once napari has docked ``widget`` (a QWidget), put it in tabs with this plugin's other docks in that area.

    Docks opened one by one from the Plugins menu otherwise stack down the window edge and push each other off a
    1920 x 1080 screen. The dock is also narrowed to a third of the window (within ``DOCK_WIDTH``): at napari's
    default window size the canvas otherwise shrinks to a sliver. Only Qt's public API is used.
    """
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    def tabify() -> None:
        dock = widget.parent()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()
        main = dock.parentWidget() if dock is not None else None
        if not isinstance(main, QMainWindow):
            return
        area = main.dockWidgetArea(dock)
        want = max(DOCK_WIDTH[0], min(DOCK_WIDTH[1], main.width() // 3))  # the canvas keeps most of the window
        if area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea) and (
                dock.width() > want):
            main.resizeDocks([dock], [want], Qt.Orientation.Horizontal)
        for other in main.findChildren(QDockWidget):
            if (other is not dock and other.objectName().endswith(_DOCK_SUFFIXES) and other.isVisible()
                    and main.dockWidgetArea(other) == area):
                main.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return

    QTimer.singleShot(0, tabify)


def follow_layers(viewer, reset_choices) -> None:
    """Call ``reset_choices`` when a layer is added, removed or renamed, so layer lists show current names."""

    def watch(layer) -> None:
        layer.events.name.connect(reset_choices)

    for layer in viewer.layers:
        watch(layer)
    viewer.layers.events.inserted.connect(lambda event: (watch(event.value), reset_choices()))
    viewer.layers.events.removed.connect(reset_choices)
