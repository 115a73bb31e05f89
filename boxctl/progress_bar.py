"""The progress bar of push, pull, clone and check: rich's bar with sizes and speeds written the one
way every other human output writes them (box_common.units: binary units, `195.3 KiB`), not rich's
own decimal `200.0 kB`. Imported only when a bar is drawn (a terminal, not --json or -q)."""

from __future__ import annotations

from rich.progress import BarColumn, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.progress import Progress as Bar
from rich.text import Text

from box_common.units import format_size
from boxctl.terminal import SafeConsole


class SizeColumn(ProgressColumn):
    """`12.0 MiB / 40.0 MiB` (or the bytes done alone while the total is unknown)."""

    def render(self, task: Task) -> Text:
        """The bytes done and the total, as format_size writes them."""
        done = format_size(int(task.completed))
        return Text(f"{done} / {format_size(int(task.total))}" if task.total is not None else done,
                    style="progress.download")


class SpeedColumn(ProgressColumn):
    """`1.2 MiB/s`, from rich's own speed estimate (bytes of the files per second)."""

    def render(self, task: Task) -> Text:
        """The speed, as format_size writes sizes, per second."""
        speed = task.finished_speed or task.speed
        return Text(f"{format_size(int(speed))}/s" if speed is not None else "?", style="progress.data.speed")


def make_bar(console: SafeConsole) -> Bar:
    """A transient bar on `console`: phase, bar, sizes, speed, time left."""
    return Bar(TextColumn("{task.description}"), BarColumn(), SizeColumn(), SpeedColumn(), TimeRemainingColumn(),
               console=console, transient=True)


__all__ = ["SizeColumn", "SpeedColumn", "make_bar"]
