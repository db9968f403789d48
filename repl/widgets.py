"""The workbench's widgets: the steering rack, per-block charts, compare and sweep views.

They draw what the Core holds and turn keys into the slash-command lines a user could have
typed (`/steer terse 1.1 --layers 9-13`, `/pick steered`), which the app submits: so every
change made with a key is recorded, and replayed, like the command it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widget import Widget
from textual.widgets import DataTable, Markdown, Static

from repl.steer_commands import (
    VectorReport,
    calibration_report,
    project_suggestion,
    provenance,
    separation_verdict,
    suggestion,
)
from repl.steering import LOUD, READ_MODES, Active
from repl.workbench import Comparison, Sweep

if TYPE_CHECKING:
    from repl.app import SteerApp

BARS = " ▁▂▃▄▅▆▇█"


def _app(widget: Widget) -> SteerApp:
    return widget.app  # type: ignore[return-value]


# -- per-block chart -------------------------------------------------------------------------------


class BlockChart(Widget):
    """A bar per block, the highlighted range drawn in the accent colour and marked beneath.

    Blocks get 1–4 columns each, whatever the width allows, so a 30-block model fits 80
    columns and reads easily at 160.
    """

    DEFAULT_CSS = """
    BlockChart { height: 7; }
    """
    ROWS = 4

    def __init__(
        self,
        title: str,
        values: Sequence[float],
        highlight: tuple[int, int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.values = [float(v) for v in values]
        self.highlight = highlight

    def render(self) -> Content:
        n = len(self.values)
        width = max(1, min(4, (self.size.width - 1) // max(n, 1)))
        finite = [v for v in self.values if math.isfinite(v)]
        top = max(finite, default=0.0) or 1.0
        lit = self.highlight or (-1, -2)
        parts: list[str | tuple[str, str]] = [(self.title, "bold"), "\n"]
        for row in range(self.ROWS - 1, -1, -1):
            for i, value in enumerate(self.values):
                level = 8 * self.ROWS * max(value, 0.0) / top if math.isfinite(value) else 0
                cell = BARS[int(max(0, min(8, round(level - 8 * row))))]
                style = "$accent" if lit[0] <= i <= lit[1] else "$text-muted"
                parts.append((cell * max(1, width - 1) + (" " if width > 1 else ""), style))
            parts.append("\n")
        parts.append(self._axis(n, width) + "\n")
        parts.append(self._marks(n, width))
        return Content.assemble(*parts)

    @staticmethod
    def _axis(n: int, width: int) -> str:
        axis = [" "] * (n * width)
        step = 5 if width > 1 else 10
        for i in range(0, n, step):
            for j, ch in enumerate(str(i)):
                if i * width + j < len(axis):
                    axis[i * width + j] = ch
        return "".join(axis)

    def _marks(self, n: int, width: int) -> Content:
        if self.highlight is None:
            return Content("")
        a, b = self.highlight
        left = " " * (a * width)
        span = "▔" * ((b - a + 1) * width - (1 if width > 1 else 0))
        return Content.assemble(left, (span, "$accent"), f" recommended {a}-{b}")


class VectorView(Vertical):
    """/vector show and a finished /contrast: norm and separation per block, then the rest."""

    DEFAULT_CSS = """
    VectorView { height: auto; margin: 1 0 0 0; padding: 0 1; border-left: thick $secondary; }
    VectorView .detail { color: $text-muted; }
    """

    def __init__(self, report: VectorReport) -> None:
        super().__init__(classes="vector-view")
        self.report = report

    def compose(self) -> ComposeResult:
        vec = self.report.vector
        rec = vec.recommended_range
        norms = [float(x) for x in vec.norms()]
        head = self.report.head or f"{vec.name}: {vec.n_layer} blocks x {vec.n_embd}"
        yield Static(f"{head} · unit {vec.strength_unit}", markup=False)
        yield BlockChart(f"norm per block (max {max(norms):.1f})", norms, rec)
        effect = [float(x) for x in vec.meta.get("effect_size", [])]
        if effect:
            yield BlockChart(f"held-out effect size per block (max {max(effect):.1f})", effect, rec)
        notes = separation_verdict(vec) + calibration_report(vec)
        label = "apply it" if self.report.head else "suggested"
        notes.append(f"{label}: {suggestion(vec)}")
        notes.append(f"project mode: {project_suggestion(vec)}")
        yield Static("\n".join(notes), markup=False)
        if not self.report.head:
            shown = [
                line if len(line) < 60 else line[:57] + "…"
                for line in provenance(vec)
                if not line.startswith(("recommended_", "strength_unit"))
            ]
            yield Static("\n".join(shown), classes="detail", markup=False)


# -- /compare --------------------------------------------------------------------------------------


class CompareView(Vertical, can_focus=True):
    """Two replies to one message, side by side when the terminal is wide, stacked if not."""

    BINDINGS = [
        Binding("1", "pick('unsteered')", "Keep unsteered"),
        Binding("2", "pick('steered')", "Keep steered"),
        Binding("0", "pick('neither')", "Keep neither"),
        Binding("escape", "leave", "Back to typing"),
    ]

    def __init__(self, comparison: Comparison) -> None:
        super().__init__(classes="compare-view")
        self.comparison = comparison
        self.decided = False

    def compose(self) -> ComposeResult:
        yield Static(f"compare: {self.comparison.prompt}", classes="compare-title", markup=False)
        with Horizontal(classes="compare-panes"):
            for key, which in (("1", "unsteered"), ("2", "steered")):
                reply = self.comparison.reply(which)
                with Vertical(classes=f"compare-pane {which}"):
                    yield Static(
                        f"{key} · {self.comparison.label(which)} · {reply.tokens} tokens",
                        classes="pane-title",
                        markup=False,
                    )
                    yield Markdown(reply.text)
        yield Static(
            "1 keeps the unsteered reply · 2 the steered one · 0 neither (or /pick)",
            classes="compare-hint",
            markup=False,
        )

    def action_pick(self, which: str) -> None:
        app = _app(self)
        if not self.decided:
            self.decided = True
            app.run_line(f"/pick {which}")
            app.focus_input()

    def action_leave(self) -> None:
        _app(self).focus_input()


# -- /sweep ----------------------------------------------------------------------------------------


class SweepView(Vertical, can_focus=True):
    """The sweep table; the highlighted row's reply is shown beneath it, Enter applies it."""

    BINDINGS = [Binding("escape", "leave", "Back to typing")]

    def __init__(self, result: Sweep) -> None:
        super().__init__(classes="sweep-view")
        self.result = result

    def compose(self) -> ComposeResult:
        yield Static(self.result.header(), classes="sweep-title", markup=False)
        table = DataTable(cursor_type="row", zebra_stripes=True, classes="sweep-table")
        table.add_columns("strength", "tokens", "repeat", "logprob", "fluent")
        best = self.result.best
        rows = [("off", self.result.baseline), *((f"{r.strength:+g}", r) for r in self.result.rows)]
        for label, row in rows:
            lp = "–" if math.isnan(row.logprob) else f"{row.logprob:.2f}"
            mark = "yes" if row.fluent else "no"
            if row is not self.result.baseline and row.strength == best:
                mark = Text("yes ◀", style="bold")
            table.add_row(label, row.reply.tokens, f"{row.degeneration:.2f}", lp, mark, key=label)
        yield table
        yield Static(self.result.verdict(short=True), classes="sweep-verdict", markup=False)
        yield Static(
            "↑/↓ show each reply · Enter applies that strength · Esc back to typing",
            classes="sweep-verdict",
            markup=False,
        )
        yield Static("", classes="sweep-reply", markup=False)

    def on_focus(self) -> None:
        self.query_one(DataTable).focus()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        best = self.result.best
        if best is not None:
            table.move_cursor(row=1 + [r.strength for r in self.result.rows].index(best))

    def row(self, index: int):
        return self.result.baseline if index == 0 else self.result.rows[index - 1]

    def action_leave(self) -> None:
        _app(self).focus_input()

    @on(DataTable.RowHighlighted)
    def show_reply(self, event: DataTable.RowHighlighted) -> None:
        row = self.row(event.cursor_row)
        label = "unsteered" if row is self.result.baseline else f"{row.strength:+g}"
        self.query_one(".sweep-reply", Static).update(f"{label}: {row.reply.text}")

    @on(DataTable.RowSelected)
    def apply(self, event: DataTable.RowSelected) -> None:
        row = self.row(event.cursor_row)
        if row is self.result.baseline:
            return
        a, b = self.result.layers
        _app(self).run_line(f"/steer {self.result.vector} {row.strength:g} --layers {a}-{b}")


# -- the steering rack -----------------------------------------------------------------------------


def steer_line(name: str, strength: float, how: Active) -> str:
    """The /steer command a rack key stands for: `how`'s blocks and mode at `strength`."""
    a, b = how.layers
    line = f"/steer {name} {strength:g} --layers {a}-{b}"
    if how.mode == "project":
        line += f" --mode project --targets {','.join(how.targets)}"
    elif how.mode in READ_MODES:
        line += f" --mode {how.mode}"
    return line


class SteeringRack(Widget, can_focus=True):
    """Every loaded vector with its state; keys stand for /steer commands."""

    BINDINGS = [
        Binding("up", "move(-1)", "Prev", show=False),
        Binding("down", "move(1)", "Next", show=False),
        Binding("left,minus", "nudge(-0.1)", "-0.1"),
        Binding("right,plus,equals_sign", "nudge(0.1)", "+0.1"),
        Binding("shift+left", "nudge(-0.5)", "-0.5", show=False),
        Binding("shift+right", "nudge(0.5)", "+0.5", show=False),
        Binding("space", "toggle", "On/off"),
        Binding("r", "reset", "Reset"),
        Binding("escape", "leave", "Back to typing"),
    ]
    BAR = 7  # cells each side of zero; a full side is strength LOUD

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.selected = 0
        self.last: dict[str, Active] = {}  # how a vector was set before it was switched off

    def names(self) -> list[str]:
        return sorted(_app(self).core.steering.vectors)

    def current(self) -> str | None:
        names = self.names()
        if not names:
            return None
        self.selected = max(0, min(self.selected, len(names) - 1))
        return names[self.selected]

    def render(self) -> Content:
        steering = _app(self).core.steering
        names = self.names()
        parts: list[str | tuple[str, str]] = [("Steering rack (^r)", "bold"), "\n"]
        if not names:
            parts.append(("no vectors yet:\n/contrast or /vector load", "$text-muted"))
            return Content.assemble(*parts)
        self.current()
        for i, name in enumerate(names):
            vec = steering.vectors[name]
            act = steering.active.get(name)
            mine = i == self.selected
            pointer = "▸ " if mine and self.has_focus else "  "
            state = ("ON", "bold $success") if act else ("off", "$text-muted")
            shown = act or self.last.get(name)
            marks = {"project": "  ⊥ project", **{m: f"  ▹ {m}" for m in READ_MODES}}
            mode = (marks[shown.mode], "$accent") if shown and shown.mode in marks else ""
            parts += [
                "\n",
                (f"{pointer}{name[:16]:<17}", "bold" if mine else ""),
                state,
                mode,
                "\n",
            ]
            if shown is not None:
                strength, layers = shown.strength, shown.layers
            else:
                strength = vec.recommended_strength or 1.0
                layers = vec.recommended_range or (1, vec.n_layer - 1)
            parts += ["  ", *self._bar(strength, bool(act)), "\n"]
            unit = "" if vec.strength_unit == "mean-diff" else f" · {vec.strength_unit}"
            parts.append((f"  blocks {layers[0]}-{layers[1]}{unit}", "$text-muted"))
            parts.append("\n")
        return Content.assemble(*parts)

    def _bar(self, strength: float, on: bool) -> list[tuple[str, str]]:
        cells = min(self.BAR, round(abs(strength) / LOUD * self.BAR))
        over = abs(strength) > LOUD
        fill = "$warning" if over else ("$accent" if on else "$text-muted")
        left = cells if strength < 0 else 0
        right = cells if strength > 0 else 0
        return [
            (f"{strength:+5.2f} ", "bold" if on else "$text-muted"),
            ("─" * (self.BAR - left), "$text-muted"),
            ("█" * left, fill),
            ("│", "$text-muted"),
            ("█" * right, fill),
            ("─" * (self.BAR - right), "$text-muted"),
        ]

    # -- keys -----------------------------------------------------------------------------------

    def action_move(self, step: int) -> None:
        if self.names():
            self.selected = (self.selected + step) % len(self.names())
            self.refresh()

    def action_nudge(self, step: float) -> None:
        name = self.current()
        if name is None:
            return
        steering = _app(self).core.steering
        act = steering.active.get(name)
        vec = steering.vectors[name]
        base = act.strength if act else 0.0
        layers = act.layers if act else (vec.recommended_range or (1, vec.n_layer - 1))
        value = round(base + step, 2) + 0.0  # no -0
        _app(self).rack_line(steer_line(name, value, act or Active(value, layers)))

    def action_toggle(self) -> None:
        name = self.current()
        if name is None:
            return
        act = _app(self).core.steering.active.get(name)
        before = self.last.get(name)
        if act is not None:
            if _app(self).rack_line(f"/steer {name} off"):
                self.last[name] = act
        elif before is not None:
            _app(self).rack_line(steer_line(name, before.strength, before))
        else:
            _app(self).rack_line(f"/steer {name}")

    def action_reset(self) -> None:
        name = self.current()
        if name is not None:
            self.last.pop(name, None)
            _app(self).rack_line(f"/steer {name}")

    def action_leave(self) -> None:
        _app(self).focus_input()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
