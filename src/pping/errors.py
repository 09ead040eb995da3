"""One error family for the whole tool; only the command line turns it into exit codes."""


class PpingError(Exception):
    """Base of every error pping reports to its user."""

    exit_code = 1


class OptionsError(PpingError):
    """A command-line option or combination of options is invalid."""

    exit_code = 2


class CaptureError(PpingError):
    """A capture file is unreadable, corrupt or truncated."""

    exit_code = 3


class OutputError(PpingError):
    """The output file cannot be opened or written."""

    exit_code = 4


class KernelError(PpingError):
    """Loading, attaching or talking to the eBPF data path failed."""

    exit_code = 5
