"""The nrstudio desktop app (PySide6 + pyqtgraph): wiring, views and workers around fusion/, tracker/ and
models/ (no algorithms here).

Threads: the UI thread only draws and forwards commands; `worker.PipelineWorker` runs the fusion loop in a
QThread; `worker.FramePump` owns the frame source (the RealSense SDK) on a daemon thread of its own, so a
stalled recording or an unplugged camera never freezes the window; side panels run in `panels.PanelJob`
threads. Everything crossing threads is plain data (numpy arrays, dicts, dataclasses).
"""

from PySide6 import QtCore as _QtCore

# Every GL view (main window, panels, floating docks) shares one set of GL resources: pyqtgraph caches
# compiled shader programs per process, which is only valid when contexts share. Qt needs this before the
# QApplication exists.
if _QtCore.QCoreApplication.instance() is None:
    _QtCore.QCoreApplication.setAttribute(_QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
