"""Where formatted output goes: standard output or a file that can be reopened.

`ReopenableFile` is the stream handed to a sink when the user asks for `-w FILE`.
On SIGHUP the command line calls `reopen()` so that log rotation works: the file
has been renamed away, a fresh one is created under the same name, and the old
one is closed. Sinks whose output has a header and a footer (the JSON array) register
as listeners so that every file they leave behind is a complete document.

`reopen()` must be called from the main loop (for instance after a signal handler
set a flag), never from inside a signal handler that may have interrupted a sink in
the middle of a record.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import BinaryIO, Protocol, TextIO

from ..errors import OutputError

# Bytes a sink hands over as they are (`write_ascii`).
Buffer = bytes | memoryview

# Large writes are cheap, many small system calls are not: buffer file output.
FILE_BUFFER_SIZE = 1 << 16
# Batches handed to the output thread and not yet written; beyond this many the
# formatting waits (a JSON batch of 8192 RTT events is about 2 MB).
PENDING_BATCHES = 8


class TextStream(Protocol):
    """What a sink needs from its output: `typing.TextIO` and `ReopenableFile` both fit."""

    def write(self, s: str, /) -> int: ...

    def flush(self) -> None: ...


def write_ascii(out: TextStream, data: Buffer) -> None:
    """Write ASCII text held in bytes (or any buffer) to `out`: through its
    `write_bytes` when it has one (no decoding, no copy), else as a str."""
    write_bytes = getattr(out, "write_bytes", None)
    if write_bytes is not None:
        write_bytes(data)
    else:
        out.write(bytes(data).decode("ascii"))


class ReopenListener(Protocol):
    """A writer that frames each file (JSON array brackets) and must see the switch."""

    def before_reopen(self) -> None:
        """Called with the old file still current: write its footer."""

    def after_reopen(self) -> None:
        """Called with the new file current: write its header, reset per-file state."""


class BackgroundWriter:
    """Writes buffers to byte streams from a thread of its own, in the order given.

    At a million RTT events a second the kernel's copy of the text into the page cache
    costs about as much as formatting it (0.3-0.5 µs per JSON record when the pages
    are new); it runs without the GIL, so a thread overlaps it with the formatting of
    the next batch. A write error is raised, once, by the next call from the caller's
    side; what is handed over after it is dropped.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[BinaryIO, Buffer] | None] = queue.Queue(PENDING_BATCHES)
        self._error: BaseException | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="pping-output", daemon=True)
        self._thread.start()

    def write(self, stream: BinaryIO, data: Buffer) -> None:
        """Hand `data` over; it must not change until written."""
        self._raise_error()
        self._queue.put((stream, data))

    def wait(self) -> None:
        """Return when everything handed over is written (or dropped after an error)."""
        self._queue.join()
        self._raise_error()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            stream, data = item
            try:
                if not self._failed:
                    stream.write(data)
                    if self._queue.empty():
                        stream.flush()  # live output is read as it comes
            except BaseException as exc:  # re-raised on the caller's side
                self._failed = True
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()


def _open(path: str | os.PathLike[str], exclusive: bool) -> TextIO:
    try:
        if exclusive:
            return open(path, "x", encoding="utf-8", buffering=FILE_BUFFER_SIZE)
        return open(path, "a", encoding="utf-8", buffering=FILE_BUFFER_SIZE)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"cannot open output file {os.fsdecode(path)}: {reason}") from exc


class ReopenableFile:
    """Standard output (path None; `stdout` or sys.stdout) or a file created at `path`.

    By default the file is created exclusively, as ePPing's `-w` does: an existing
    file is never overwritten or appended to, so a reopen before the old file was
    moved away fails (OutputError) and output continues in the old file. With
    `exclusive=False` an existing file is appended to instead (fine for line
    formats; a JSON array appended to another one is no longer one document).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stdout: TextIO | None = None,
        *,
        exclusive: bool = True,
    ) -> None:
        self.path = path
        self.exclusive = exclusive
        self._listeners: list[ReopenListener] = []
        self._closed = False
        if path is None:
            self._stream: TextIO = stdout if stdout is not None else sys.stdout
            self._owned = False
        else:
            self._stream = _open(path, exclusive)
            self._owned = True
        # Byte batches go to the file through a thread (BackgroundWriter); text is
        # written here, after the batches handed over before it.
        self._writer: BackgroundWriter | None = None
        self._bytes_pending = False
        self._text_pending = False

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def stream(self) -> TextIO:
        """The stream currently written to (changes on reopen)."""
        return self._stream

    def add_reopen_listener(self, listener: ReopenListener) -> None:
        self._listeners.append(listener)

    def write(self, s: str, /) -> int:
        self._settle()
        self._text_pending = True
        return self._stream.write(s)

    def write_bytes(self, data: Buffer, /) -> None:
        """Write ASCII text given as bytes (or any buffer), without decoding it: after
        the text written so far, to the byte stream under it when it has one, from the
        output thread. `data` must not change afterwards."""
        raw = getattr(self._stream, "buffer", None)
        if raw is None:
            self._stream.write(bytes(data).decode("ascii"))
            return
        if self._text_pending:
            self._stream.flush()
            self._text_pending = False
        if self._writer is None:
            self._writer = BackgroundWriter()
        self._writer.write(raw, data)
        self._bytes_pending = True

    def flush(self) -> None:
        """Pass the output on to the system: text now, batches as the output thread
        writes them (it flushes whenever it has caught up). Waiting for the batches
        here would make formatting and writing take turns again."""
        if self._writer is None or self._text_pending:
            self._stream.flush()
            self._text_pending = False

    def _settle(self) -> None:
        """Wait until the batches handed over are written; raise a write error."""
        if self._bytes_pending:
            assert self._writer is not None
            self._bytes_pending = False
            self._writer.wait()

    def reopen(self) -> bool:
        """Switch to a freshly created file at the same path.

        Returns False (and does nothing) when writing to standard output, as ePPing
        ignores SIGHUP then. The new file is opened before anything is written to or
        closed on the old one: when opening fails, OutputError is raised and the old
        file stays current and intact. Otherwise listeners close their document in the
        old file, the old file is flushed and closed, and listeners start a new
        document in the new one.
        """
        if self.path is None or self._closed:
            return False
        self._settle()
        new = _open(self.path, self.exclusive)
        for listener in self._listeners:
            listener.before_reopen()
        old = self._stream
        self._stream = new
        try:
            old.close()
        except OSError as exc:
            raise OutputError(f"error closing the previous output file: {exc}") from exc
        finally:
            for listener in self._listeners:
                listener.after_reopen()
        return True

    def close(self) -> None:
        """Flush; close the file if this object opened it (standard output stays open)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_writer()
        finally:
            try:
                if self._owned:
                    self._stream.close()
                else:
                    self._stream.flush()
            except OSError as exc:
                raise OutputError(f"error closing output: {exc}") from exc

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        self._bytes_pending = False
        if writer is not None:
            writer.stop()

    def __enter__(self) -> ReopenableFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
