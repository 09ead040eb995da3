"""Attach the kernel program to an interface, and take it off again.

Egress is always the tc program; ingress is the tc program, or with `-I xdp` the XDP
entry (`ingress_hook="xdp"`). Two mechanisms, tried in this order:

- **BPF links** (`tcx` mode; kernel >= 6.6 for tc, 5.9 for XDP): one link per hook
  (`bpf_link_create` with BPF_TCX_INGRESS / BPF_TCX_EGRESS / BPF_XDP). A link lives as
  long as its file descriptor: closing it detaches the program, and so does the death
  of the process, however it dies (SIGKILL included). Nothing is left behind on the
  interface.
- **netlink** (`clsact` mode, older kernels): a clsact qdisc and one tc filter per tc
  hook, and the XDP program set on the device (`bpf_xdp_attach`). These outlive the
  process, so they are removed on exit; the qdisc is removed only when it was created
  here (one that already existed belongs to someone else and is never touched), and
  the XDP program only if it is still ours.

An XDP program that is already on the interface is never replaced, by either
mechanism: attaching fails with one line saying so.

`PPING_ATTACH=tcx` or `PPING_ATTACH=clsact` in the environment forces one mechanism
(for tests; the default, `auto`, falls back to netlink only when the kernel does not
know the link type). Every failure is a `KernelError` of one line, `failed to attach
to eth0: <reason>`.
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
INGRESS_HOOKS = ("tc", "xdp")
# Errors with which a kernel without tcx (or XDP links) refuses the attach types.
_NO_LINKS = frozenset((errno.EINVAL, errno.EOPNOTSUPP, 524))  # 524: ENOTSUPP (kernel-internal)
# Errors of an XDP attach that finds a program there already (EEXIST: in another mode).
_XDP_TAKEN = frozenset((errno.EBUSY, errno.EEXIST))


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
    """The programs attached to one interface; `detach()` undoes exactly that."""

    def __init__(self, ifname: str, ifindex: int, mode: str, ingress_hook: str = "tc") -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.mode = mode  # of the tc hooks: "tcx" or "clsact"
        self.ingress_hook = ingress_hook
        self.link_fds: list[int] = []
        # clsact: (attach point, handle, priority) of each filter created here.
        self.filters: list[tuple[int, int, int]] = []
        self.created_qdisc = False
        # XDP through netlink: the program set on the device (to remove only it).
        self.xdp_netlink_fd: int | None = None
        self.attached = False

    def __repr__(self) -> str:
        return (
            f"Attachment({self.ifname!r}, ifindex={self.ifindex}, mode={self.mode!r}, "
            f"ingress_hook={self.ingress_hook!r})"
        )

    def _fail(self, code: int) -> KernelError:
        return KernelError(f"failed to attach to {self.ifname}: {_reason(code)}")

    # -- tcx ---------------------------------------------------------------------

    def _attach_tcx(self, programs: list[tuple[int, str]]) -> int:
        """0, or the (positive) errno of the first link that failed (the links made
        here are then closed again; an XDP link made before stays)."""
        create = libbpf.lib().bpf_link_create
        made: list[int] = []
        for prog_fd, direction in programs:
            fd = int(create(prog_fd, self.ifindex, _TCX_TYPES[direction], None))
            if fd < 0:
                for link_fd in made:
                    os.close(link_fd)
                return -fd
            made.append(fd)
        self.link_fds += made
        return 0

    def _close_links(self) -> None:
        while self.link_fds:
            os.close(self.link_fds.pop())

    # -- clsact ------------------------------------------------------------------

    def _attach_clsact(self, programs: list[tuple[int, str]]) -> None:
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
            for prog_fd, direction in programs:
                point = _TC_POINTS[direction]
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

    # -- XDP ---------------------------------------------------------------------

    def _attach_xdp(self, prog_fd: int, mode: str) -> None:
        """The XDP entry as the interface's XDP program: a link, else through netlink;
        never in place of a program that is there already."""
        if mode in ("auto", "tcx"):
            fd = int(libbpf.lib().bpf_link_create(prog_fd, self.ifindex, libbpf.BPF_XDP, None))
            if fd >= 0:
                self.link_fds.append(fd)
                return
            if mode == "tcx" or -fd not in _NO_LINKS:
                raise self._xdp_fail(-fd)
        result = libbpf.lib().bpf_xdp_attach(
            self.ifindex, prog_fd, libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST, None
        )
        if result < 0:
            raise self._xdp_fail(-result)
        self.xdp_netlink_fd = prog_fd

    def _xdp_fail(self, code: int) -> KernelError:
        if code in _XDP_TAKEN:
            return KernelError(
                f"failed to attach to {self.ifname}: an XDP program is attached already "
                "(pping does not replace it)"
            )
        return self._fail(code)

    def _detach_xdp_netlink(self) -> int:
        """Take our XDP program off (not one that replaced it since); 0 or an errno."""
        if self.xdp_netlink_fd is None:
            return 0
        opts = libbpf.BpfXdpAttachOpts(
            sz=ctypes.sizeof(libbpf.BpfXdpAttachOpts), old_prog_fd=self.xdp_netlink_fd
        )
        self.xdp_netlink_fd = None
        result = int(
            libbpf.lib().bpf_xdp_detach(
                self.ifindex, libbpf.XDP_FLAGS_REPLACE, ctypes.addressof(opts)
            )
        )
        # Gone with the interface, or someone else's program now (EEXIST): not ours.
        if result < 0 and -result not in (errno.ENOENT, errno.ENODEV, errno.EEXIST):
            return -result
        return 0

    # -- all hooks ---------------------------------------------------------------

    def attach(self, ingress_fd: int, egress_fd: int, mode: str) -> None:
        """Attach the egress program and the ingress one (a tc program, or the XDP
        entry with ingress hook "xdp"); all or nothing."""
        tc_programs = [(egress_fd, "egress")]
        if self.ingress_hook == "xdp":
            self._attach_xdp(ingress_fd, mode)
        else:
            tc_programs.insert(0, (ingress_fd, "ingress"))
        try:
            self._attach_tc(tc_programs, mode)
        except BaseException:
            self._close_links()
            self._detach_xdp_netlink()
            raise
        self.attached = True

    def _attach_tc(self, programs: list[tuple[int, str]], mode: str) -> None:
        if mode in ("auto", "tcx"):
            code = self._attach_tcx(programs)
            if code == 0:
                self.mode = "tcx"
                return
            if mode == "tcx" or code not in _NO_LINKS:
                raise self._fail(code)
        self.mode = "clsact"
        self._attach_clsact(programs)

    def detach(self) -> None:
        """Take the programs off (idempotent); KernelError if the kernel refused."""
        if not self.attached:
            return
        self.attached = False
        self._close_links()
        xdp_code = self._detach_xdp_netlink()
        code = self._detach_clsact() or xdp_code
        if code:
            raise KernelError(f"failed to detach from {self.ifname}: {_reason(code)}")


_TCX_TYPES = {"ingress": libbpf.BPF_TCX_INGRESS, "egress": libbpf.BPF_TCX_EGRESS}
_TC_POINTS = {"ingress": libbpf.BPF_TC_INGRESS, "egress": libbpf.BPF_TC_EGRESS}


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
    ingress_hook: str = "tc",
) -> Attachment:
    """Attach the programs to `ifname` (links, else netlink: see the module's text);
    `ingress_fd` is the XDP entry's when `ingress_hook` is "xdp"."""
    chosen = attach_mode() if mode is None else mode
    if chosen not in MODES:
        raise KernelError(f"failed to attach to {ifname}: unknown mechanism {chosen}")
    if ingress_hook not in INGRESS_HOOKS:
        raise KernelError(f"failed to attach to {ifname}: unknown ingress hook {ingress_hook}")
    index = interface_index(ifname) if ifindex is None else ifindex
    attachment = Attachment(ifname, index, chosen, ingress_hook)
    attachment.attach(ingress_fd, egress_fd, chosen)
    return attachment
