"""Attach the kernel program's two tc programs to an interface, and take them off again.

Two mechanisms, tried in this order:

- **tcx** (kernel >= 6.6): one BPF link per direction (`bpf_link_create` with
  BPF_TCX_INGRESS / BPF_TCX_EGRESS). The link lives as long as its file descriptor:
  closing it detaches the program, and so does the death of the process, however it
  dies (SIGKILL included). Nothing is left behind on the interface.
- **clsact** (older kernels): a clsact qdisc and one tc filter per direction, through
  netlink. Filters outlive the process, so they are removed on exit; the qdisc is
  removed only when it was created here (one that already existed belongs to someone
  else and is never touched).

`PPING_ATTACH=tcx` or `PPING_ATTACH=clsact` in the environment forces one mechanism
(for tests; the default, `auto`, falls back to clsact only when the kernel does not
know tcx). Every failure is a `KernelError` of one line, `failed to attach to eth0:
<reason>`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

from ..errors import KernelError
from . import libbpf

ATTACH_ENV = "PPING_ATTACH"
MODES = ("auto", "tcx", "clsact")
# Errors with which a kernel without tcx refuses the attach types (unknown to it).
_NO_TCX = frozenset((errno.EINVAL, errno.EOPNOTSUPP, 524))  # 524: ENOTSUPP (kernel-internal)


def _reason(code: int) -> str:
    code = abs(code)
    if code == 524:
        return "Operation not supported"
    return os.strerror(code) if code else "unknown error"


def interface_index(ifname: str) -> int:
    """The index of `ifname` in this network namespace, or KernelError."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError as error:
        code = error.errno or errno.ENODEV
        raise KernelError(f"failed to attach to {ifname}: {_reason(code)}") from None
    except ValueError:  # an embedded NUL byte, or an absurdly long name
        raise KernelError(f"failed to attach to {ifname!r}: not an interface name") from None


def interface_exists(ifindex: int) -> bool:
    """Whether an interface with this index still exists (in this namespace)."""
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        return False
    return True


def _hook(ifindex: int, attach_point: int) -> libbpf.BpfTcHook:
    return libbpf.BpfTcHook(
        sz=ctypes.sizeof(libbpf.BpfTcHook), ifindex=ifindex, attach_point=attach_point
    )


class Attachment:
    """The two programs attached to one interface; `detach()` undoes exactly that."""

    def __init__(self, ifname: str, ifindex: int, mode: str) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.mode = mode  # "tcx" or "clsact"
        self.link_fds: list[int] = []
        # clsact: (attach point, handle, priority) of each filter created here.
        self.filters: list[tuple[int, int, int]] = []
        self.created_qdisc = False
        self.attached = False

    def __repr__(self) -> str:
        return f"Attachment({self.ifname!r}, ifindex={self.ifindex}, mode={self.mode!r})"

    def _fail(self, code: int) -> KernelError:
        return KernelError(f"failed to attach to {self.ifname}: {_reason(code)}")

    # -- tcx ---------------------------------------------------------------------

    def _attach_tcx(self, ingress_fd: int, egress_fd: int) -> int:
        """0, or the (positive) errno of the first link that failed."""
        create = libbpf.lib().bpf_link_create
        for prog_fd, attach_type in (
            (ingress_fd, libbpf.BPF_TCX_INGRESS),
            (egress_fd, libbpf.BPF_TCX_EGRESS),
        ):
            fd = int(create(prog_fd, self.ifindex, attach_type, None))
            if fd < 0:
                self._close_links()
                return -fd
            self.link_fds.append(fd)
        return 0

    def _close_links(self) -> None:
        while self.link_fds:
            os.close(self.link_fds.pop())

    # -- clsact ------------------------------------------------------------------

    def _attach_clsact(self, ingress_fd: int, egress_fd: int) -> None:
        lib = libbpf.lib()
        both = _hook(self.ifindex, libbpf.BPF_TC_INGRESS | libbpf.BPF_TC_EGRESS)
        result = lib.bpf_tc_hook_create(ctypes.addressof(both))
        if result == -errno.EEXIST:
            self.created_qdisc = False  # someone else's: used, never removed
        elif result < 0:
            raise self._fail(result)
        else:
            self.created_qdisc = True
        try:
            for prog_fd, point in (
                (ingress_fd, libbpf.BPF_TC_INGRESS),
                (egress_fd, libbpf.BPF_TC_EGRESS),
            ):
                hook = _hook(self.ifindex, point)
                opts = libbpf.BpfTcOpts(sz=ctypes.sizeof(libbpf.BpfTcOpts), prog_fd=prog_fd)
                result = lib.bpf_tc_attach(ctypes.addressof(hook), ctypes.addressof(opts))
                if result < 0:
                    raise self._fail(result)
                self.filters.append((point, int(opts.handle), int(opts.priority)))
        except BaseException:
            self._detach_clsact()
            raise

    def _detach_clsact(self) -> int:
        """Remove our filters, then our qdisc; returns the first error (0: none).

        An interface that is gone took everything with it: that is not an error.
        """
        lib = libbpf.lib()
        first_error = 0
        while self.filters:
            point, handle, priority = self.filters.pop()
            hook = _hook(self.ifindex, point)
            # libbpf demands prog_fd, prog_id and flags of zero when detaching.
            opts = libbpf.BpfTcOpts(
                sz=ctypes.sizeof(libbpf.BpfTcOpts), handle=handle, priority=priority
            )
            result = lib.bpf_tc_detach(ctypes.addressof(hook), ctypes.addressof(opts))
            if result < 0 and -result not in (errno.ENOENT, errno.ENODEV) and not first_error:
                first_error = -result
        if self.created_qdisc:
            self.created_qdisc = False
            both = _hook(self.ifindex, libbpf.BPF_TC_INGRESS | libbpf.BPF_TC_EGRESS)
            result = lib.bpf_tc_hook_destroy(ctypes.addressof(both))
            if result < 0 and -result not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                first_error = first_error or -result
        return first_error

    # -- both --------------------------------------------------------------------

    def attach(self, ingress_fd: int, egress_fd: int, mode: str) -> None:
        if mode in ("auto", "tcx"):
            code = self._attach_tcx(ingress_fd, egress_fd)
            if code == 0:
                self.mode = "tcx"
                self.attached = True
                return
            if mode == "tcx" or code not in _NO_TCX:
                raise self._fail(code)
        self.mode = "clsact"
        self._attach_clsact(ingress_fd, egress_fd)
        self.attached = True

    def detach(self) -> None:
        """Take the programs off (idempotent); KernelError if the kernel refused."""
        if not self.attached:
            return
        self.attached = False
        self._close_links()
        code = self._detach_clsact()
        if code:
            raise KernelError(f"failed to detach from {self.ifname}: {_reason(code)}")


def attach_mode() -> str:
    """The mechanism asked for in the environment (default "auto")."""
    mode = os.environ.get(ATTACH_ENV, "auto") or "auto"
    if mode not in MODES:
        raise KernelError(f"failed to attach: {ATTACH_ENV}={mode} is not one of {', '.join(MODES)}")
    return mode


def attach(
    ifname: str,
    ingress_fd: int,
    egress_fd: int,
    mode: str | None = None,
    ifindex: int | None = None,
) -> Attachment:
    """Attach the two programs to `ifname` (tcx, else clsact: see the module's text)."""
    chosen = attach_mode() if mode is None else mode
    if chosen not in MODES:
        raise KernelError(f"failed to attach to {ifname}: unknown mechanism {chosen}")
    index = interface_index(ifname) if ifindex is None else ifindex
    attachment = Attachment(ifname, index, chosen)
    attachment.attach(ingress_fd, egress_fd, chosen)
    return attachment
