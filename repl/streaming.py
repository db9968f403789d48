"""The widget a reply is drawn in while it streams."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class StreamingReply(Static):
    """A reply as plain text while the model writes it; the app puts Markdown in its place
    once the reply is done.

    The UI thread shares this machine's cores with llama.cpp's threads, so its drawing while a
    token is computed slows the reply (bench/app_bench.py). Textual's Markdown widget grows as
    it streams, and every update that changes its height lays out the whole screen (~12 ms,
    more as the transcript grows). This widget's height grows in steps of `STEP` rows, so only
    an update that starts a new step costs a layout; the others repaint this widget's region.
    """

    STEP = 8

    def __init__(self, classes: str | None = None) -> None:
        super().__init__("", markup=False, classes=classes)
        self.text = ""
        self._height = 0

    def append(self, text: str) -> None:
        self.text += text
        width = self.content_size.width or self.app.size.width  # 0 before the first layout
        rows = len(Content(self.text).wrap(max(1, width)))
        height = -(-rows // self.STEP) * self.STEP + self.styles.gutter.height
        grow = height != self._height
        if grow:
            self._height = height
            self.styles.height = height
        self.update(self.text, layout=grow)
