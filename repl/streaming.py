"""The widget a reply is drawn in while it streams."""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Region
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget


class StreamingReply(Widget):
    """A reply as plain text while the model writes it; the app puts Markdown in its place
    once the reply is done.

    The UI thread shares this machine's cores with llama.cpp's threads, so its drawing while a
    token is computed slows the reply (bench/app_bench.py). Two things keep that drawing small:

    - The height grows in steps of `STEP` rows. Textual's Markdown widget grows as it streams,
      and every update that changes a widget's height lays out the whole screen (~12 ms, more
      as the transcript grows); here only an update that starts a new step costs a layout.
    - Only rows that changed are drawn again. The text is kept as wrapped rows: those of
      paragraphs that have ended are final, and an update wraps only the last paragraph and
      repaints from its first changed row. A `Static` wraps and draws the whole reply on every
      update, so each one cost more as the reply grew.
    """

    DEFAULT_CSS = "StreamingReply { height: auto; }"
    # a row is drawn on its own, so a selection's offsets would not line up; the reply is
    # selectable once its Markdown takes this widget's place
    ALLOW_SELECT = False
    STEP = 8

    def __init__(self, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.text = ""
        self._height = 0
        self._width = 0  # the width the rows were wrapped at
        self._done: list[Content] = []  # rows of the paragraphs a newline has ended
        self._tail: list[Content] = []  # rows of the paragraph being written
        self._tail_start = 0  # where that paragraph starts in `text`

    def append(self, text: str) -> None:
        self.text += text
        self._sync()

    def on_resize(self) -> None:
        if self.text and self.content_size.width != self._width:
            self._sync()
            self.refresh()

    def _sync(self) -> None:
        """Wrap what is new, set the height, and repaint the rows that changed."""
        width = max(1, self.content_size.width or self.app.size.width)  # 0 before a layout
        first = self._wrap(width)
        rows = len(self._done) + len(self._tail)
        height = -(-rows // self.STEP) * self.STEP + self.styles.gutter.height
        if height != self._height:
            self._height = height
            self.styles.height = height  # a layout, and every row drawn
        elif rows > first:
            self.refresh(Region(0, first, width, rows - first))

    def _wrap(self, width: int) -> int:
        """Bring the rows up to date with `text`; returns the first row that changed."""
        if width != self._width:
            self._width, self._done, self._tail, self._tail_start = width, [], [], 0
        first, old = len(self._done), self._tail
        tail = self.text[self._tail_start :]
        if "\n" in tail:
            *ended, tail = tail.split("\n")
            self._done += [row for paragraph in ended for row in self._rows(paragraph)]
            self._tail_start = len(self.text) - len(tail)
        self._tail = self._rows(tail)
        same = 0
        for a, b in zip(old, self._done[first:] + self._tail, strict=False):
            if a.plain != b.plain:
                break
            same += 1
        return first + same

    def _rows(self, paragraph: str) -> list[Content]:
        return Content(paragraph).wrap(self._width)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._done) + len(self._tail)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        done = len(self._done)
        if y < done:
            row = self._done[y]
        elif y - done < len(self._tail):
            row = self._tail[y - done]
        else:
            return Strip.blank(width, self.visual_style.rich_style)
        strips = Visual.to_strips(self, row, width, 1, self.visual_style, pad=True)
        return strips[0] if strips else Strip.blank(width, self.visual_style.rich_style)
