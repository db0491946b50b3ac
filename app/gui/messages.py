"""Non-modal message boxes: a message never blocks the event loop (the worker's signals, the views and the
tests keep running while it is shown)."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets


def notify(parent: QtWidgets.QWidget | None, title: str, text: str, level: str = "warning") -> QtWidgets.QMessageBox:
    """Show a non-modal message box (level: info | warning | error) and return it (it deletes itself when
    closed)."""
    icon = {"info": QtWidgets.QMessageBox.Icon.Information, "warning": QtWidgets.QMessageBox.Icon.Warning,
            "error": QtWidgets.QMessageBox.Icon.Critical}.get(level, QtWidgets.QMessageBox.Icon.Warning)
    box = QtWidgets.QMessageBox(icon, title, text, QtWidgets.QMessageBox.StandardButton.Ok, parent)
    box.setWindowModality(QtCore.Qt.WindowModality.NonModal)
    box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    box.show()
    return box
