"""What `make run` shows: each step as it happens, progress of the long ones, and the services'
log lines prefixed with their instance name."""

import sys
import threading
import time
from pathlib import Path
from typing import IO, TextIO

COLOURS = ["\033[36m", "\033[32m", "\033[33m", "\033[35m", "\033[34m", "\033[91m", "\033[92m", "\033[93m"]
RESET = "\033[0m"


class Console:
    def __init__(self, *, quiet: bool = False, out: TextIO | None = None) -> None:
        self.quiet = quiet
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._lock = threading.Lock()
        self._progress_line = ""
        self._progress_at = 0.0
        self._step_started = time.monotonic()
        self._colours: dict[str, str] = {}

    def _write(self, text: str) -> None:
        with self._lock:
            if self._progress_line and self.tty:
                self.out.write("\r\033[K")
                self._progress_line = ""
            self.out.write(text + "\n")
            self.out.flush()

    def say(self, message: str) -> None:
        """A supervisor event (always shown)."""
        self._write(f"devstack: {message}")

    def step(self, name: str, message: str) -> None:
        self._step_started = time.monotonic()
        if not self.quiet:
            self._write(f"devstack: {name}: {message}")

    def step_detail(self, message: str) -> None:
        if not self.quiet:
            self._write(f"devstack:   {message}")

    def progress(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self._step_started
        line = f"devstack:   {message} ({elapsed:.0f} s)"
        with self._lock:
            if self.tty:
                self.out.write("\r\033[K" + line)
                self.out.flush()
                self._progress_line = line
            elif time.monotonic() - self._progress_at >= 3 and message != self._progress_line:
                self.out.write(line + "\n")
                self.out.flush()
                self._progress_line = message
                self._progress_at = time.monotonic()

    def end_progress(self) -> None:
        with self._lock:
            if self._progress_line and self.tty:
                self.out.write("\n")
                self.out.flush()
            self._progress_line = ""

    def relay(self, name: str, stream: IO[bytes] | None, log_path: Path) -> None:
        """Copies a process's output to its log file and, prefixed, to the console."""
        if stream is None:
            return
        if self.tty:
            colour = self._colours.setdefault(name, COLOURS[len(self._colours) % len(COLOURS)])
            prefix = f"{colour}{name:>14} |{RESET} "
        else:
            prefix = f"{name:>14} | "
        with log_path.open("ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                if not self.quiet:
                    self._write(prefix + raw.decode(errors="replace").rstrip())
