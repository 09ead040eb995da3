"""A small ctypes binding over the system's libbpf.so.1 (only what pping needs).

Written against libbpf 1.1 (Debian 12), whose conventions it relies on: object and
map functions return NULL or a negative errno, and set errno. Every failure becomes
a `KernelError` whose message is one line, `failed to <what>: <reason>`; libbpf's own
messages (the verifier log among them) are collected and kept on the error as
`details` instead of being printed (set PPING_LIBBPF_DEBUG=1 to see them live).

The library is loaded on first use, so importing this module costs nothing and does
not fail on a machine without libbpf.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_module
import functools
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import KernelError

LIBBPF_NAME = "libbpf.so.1"

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_F_NO_PREALLOC = 1

# enum bpf_attach_type (libbpf 1.1 lacks bpf_program__attach_tcx: use bpf_link_create)
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

# XDP attach flags (linux/if_link.h), for the netlink fallback
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_REPLACE = 1 << 4

# enum bpf_tc_attach_point
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2

# enum libbpf_print_level
LIBBPF_WARN = 0
LIBBPF_INFO = 1
LIBBPF_DEBUG = 2

BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15

# BPF_PROG_TEST_RUN copies at most this much packet into a linear skb on this kernel
# (a page less the headroom and the shared info); longer input is refused.
TEST_RUN_MAX_PACKET = 3712
TEST_RUN_MIN_PACKET = 14  # an Ethernet header

_U64_MAX = (1 << 64) - 1


class BpfTestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (80 bytes on x86-64)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_char_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class SkBuff(ctypes.Structure):
    """struct __sk_buff (192 bytes), with the fields BPF_PROG_TEST_RUN lets us set.

    The kernel refuses a context with any other field set, so the rest is padding.
    """

    _fields_ = [
        ("_len_pkt_type", ctypes.c_uint32 * 2),
        ("mark", ctypes.c_uint32),  # offset 8
        ("_queue_to_vlan", ctypes.c_uint32 * 5),
        ("priority", ctypes.c_uint32),  # offset 32
        ("ingress_ifindex", ctypes.c_uint32),  # offset 36
        ("ifindex", ctypes.c_uint32),  # offset 40
        ("_tc_index", ctypes.c_uint32),
        ("cb", ctypes.c_uint32 * 5),  # offset 48
        ("_hash_to_data_meta", ctypes.c_uint32 * 19),
        ("_flow_keys", ctypes.c_uint64),  # offset 144
        ("tstamp", ctypes.c_uint64),  # offset 152
        ("wire_len", ctypes.c_uint32),  # offset 160
        ("gso_segs", ctypes.c_uint32),
        ("_sk", ctypes.c_uint64),
        ("gso_size", ctypes.c_uint32),  # offset 176
        ("_tstamp_type", ctypes.c_uint8 * 4),
        ("hwtstamp", ctypes.c_uint64),  # offset 184
    ]


class BpfMapBatchOpts(ctypes.Structure):
    """struct bpf_map_batch_opts (24 bytes)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class BpfTcHook(ctypes.Structure):
    """struct bpf_tc_hook (24 bytes)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfTcOpts(ctypes.Structure):
    """struct bpf_tc_opts (32 bytes)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfXdpAttachOpts(ctypes.Structure):
    """struct bpf_xdp_attach_opts (16 bytes)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("old_prog_fd", ctypes.c_int),
        ("_pad", ctypes.c_uint32),
    ]


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


# Structures whose size the binding relies on (tests/test_abi.py checks them with C).
C_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "bpf_test_run_opts": BpfTestRunOpts,
    "__sk_buff": SkBuff,
    "bpf_map_batch_opts": BpfMapBatchOpts,
    "bpf_tc_hook": BpfTcHook,
    "bpf_tc_opts": BpfTcOpts,
    "bpf_xdp_attach_opts": BpfXdpAttachOpts,
}

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lib: ctypes.CDLL | None = None
_print_callback: Any = None
_messages: list[str] = []


def _strerror(code: int) -> str:
    code = abs(code)
    return os.strerror(code) if code else "unknown error"


def _on_libbpf_message(level: int, fmt: bytes | None, args: int | None) -> int:
    """libbpf's print callback: keep warnings and information (the verifier log of a
    failed load is a warning); debug messages only with PPING_LIBBPF_DEBUG."""
    debug = bool(os.environ.get("PPING_LIBBPF_DEBUG"))
    if level >= LIBBPF_DEBUG and not debug:
        return 0
    text = ""
    if fmt is not None:
        if platform.machine() in ("x86_64", "AMD64") and args is not None:
            # On x86-64 a va_list argument is passed as a pointer, which vsnprintf takes.
            buf = ctypes.create_string_buffer(4096)
            _libc().vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
            text = buf.value.decode(errors="replace")
        else:
            text = fmt.decode(errors="replace")
    _messages.append(text)
    del _messages[:-400]
    if debug:
        sys.stderr.write(text)
    return 0


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    libc.vsnprintf.restype = ctypes.c_int
    return libc


def _declare(lib: ctypes.CDLL) -> None:
    p, i, u32, u64, sz = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_uint64,
        ctypes.c_size_t,
    )
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "bpf_object__open_file": (p, [ctypes.c_char_p, p]),
        "bpf_object__load": (i, [p]),
        "bpf_object__close": (None, [p]),
        "bpf_object__btf": (p, [p]),
        "bpf_object__find_map_by_name": (p, [p, ctypes.c_char_p]),
        "bpf_object__find_program_by_name": (p, [p, ctypes.c_char_p]),
        "bpf_map__set_max_entries": (i, [p, u32]),
        "bpf_map__max_entries": (u32, [p]),
        "bpf_map__set_map_flags": (i, [p, u32]),
        "bpf_map__map_flags": (u32, [p]),
        "bpf_map__initial_value": (p, [p, ctypes.POINTER(sz)]),
        "bpf_map__fd": (i, [p]),
        "bpf_map__key_size": (u32, [p]),
        "bpf_map__value_size": (u32, [p]),
        "bpf_program__set_autoload": (i, [p, ctypes.c_bool]),
        "bpf_program__fd": (i, [p]),
        "btf__find_by_name_kind": (ctypes.c_int32, [p, ctypes.c_char_p, u32]),
        "btf__type_by_id": (p, [p, u32]),
        "btf__name_by_offset": (ctypes.c_char_p, [p, u32]),
        "bpf_prog_test_run_opts": (i, [i, p]),
        "bpf_map_lookup_elem": (i, [i, p, p]),
        "bpf_map_update_elem": (i, [i, p, p, u64]),
        "bpf_map_delete_elem": (i, [i, p]),
        "bpf_map_lookup_batch": (i, [i, p, p, p, p, ctypes.POINTER(u32), p]),
        "bpf_map_update_batch": (i, [i, p, p, ctypes.POINTER(u32), p]),
        "bpf_map_delete_batch": (i, [i, p, ctypes.POINTER(u32), p]),
        "bpf_link_create": (i, [i, i, i, p]),
        "bpf_tc_hook_create": (i, [p]),
        "bpf_tc_hook_destroy": (i, [p]),
        "bpf_tc_attach": (i, [p, p]),
        "bpf_tc_detach": (i, [p, p]),
        "bpf_xdp_attach": (i, [i, i, u32, p]),
        "bpf_xdp_detach": (i, [i, u32, p]),
        "libbpf_num_possible_cpus": (i, []),
        "libbpf_set_print": (p, [_PRINT_FN]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def lib() -> ctypes.CDLL:
    """The loaded libbpf, declared and with its messages captured."""
    global _lib, _print_callback
    if _lib is None:
        try:
            loaded = ctypes.CDLL(LIBBPF_NAME, use_errno=True)
        except OSError as error:
            raise KernelError(f"failed to load {LIBBPF_NAME}: {error}") from None
        _declare(loaded)
        _print_callback = _PRINT_FN(_on_libbpf_message)
        loaded.libbpf_set_print(_print_callback)
        _lib = loaded
    return _lib


def recent_messages() -> str:
    """What libbpf said lately (verifier logs included), for error details."""
    return "".join(_messages)


def _fail(what: str, code: int) -> KernelError:
    error = KernelError(f"failed to {what}: {_strerror(code)}")
    error.details = recent_messages()  # type: ignore[attr-defined]
    return error


def _check(result: int, what: str) -> int:
    if result < 0:
        raise _fail(what, result)
    return result


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "count the possible CPUs")


# -- objects, maps, programs --------------------------------------------------------


class BpfMap:
    """A map of an opened object (its fd is valid once the object is loaded)."""

    def __init__(self, pointer: int, name: str) -> None:
        self._pointer = pointer
        self.name = name

    def set_max_entries(self, entries: int) -> None:
        if not 0 < entries <= 0xFFFFFFFF:
            raise KernelError(f"failed to size map {self.name}: {entries} entries")
        _check(lib().bpf_map__set_max_entries(self._pointer, entries), f"size map {self.name}")

    @property
    def max_entries(self) -> int:
        return int(lib().bpf_map__max_entries(self._pointer))

    def add_flags(self, flags: int) -> None:
        current = lib().bpf_map__map_flags(self._pointer)
        _check(
            lib().bpf_map__set_map_flags(self._pointer, current | flags),
            f"set flags of {self.name}",
        )

    @property
    def key_size(self) -> int:
        return int(lib().bpf_map__key_size(self._pointer))

    @property
    def value_size(self) -> int:
        return int(lib().bpf_map__value_size(self._pointer))

    @property
    def fd(self) -> int:
        return _check(lib().bpf_map__fd(self._pointer), f"get the fd of map {self.name}")

    def initial_value(self) -> tuple[int, int]:
        """(address, size) of the map's initial contents (.rodata/.data), before load."""
        size = ctypes.c_size_t(0)
        address = lib().bpf_map__initial_value(self._pointer, ctypes.byref(size))
        if not address:
            raise KernelError(f"failed to access the contents of map {self.name}")
        return int(address), int(size.value)


class BpfProgram:
    def __init__(self, pointer: int, name: str) -> None:
        self._pointer = pointer
        self.name = name

    def set_autoload(self, autoload: bool) -> None:
        _check(lib().bpf_program__set_autoload(self._pointer, autoload), f"configure {self.name}")

    @property
    def fd(self) -> int:
        return _check(lib().bpf_program__fd(self._pointer), f"get the fd of {self.name}")


class BpfObject:
    """An opened (then loaded) BPF object file; close it, or use it as a context."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        library = lib()
        ctypes.set_errno(0)
        pointer = library.bpf_object__open_file(self.path.encode(), None)
        if not pointer:
            raise _fail(
                f"open the BPF object {self.path}", ctypes.get_errno() or errno_module.EINVAL
            )
        self._pointer: int | None = int(pointer)

    def _ptr(self) -> int:
        if self._pointer is None:
            raise KernelError("failed to use the BPF object: it is closed")
        return self._pointer

    def map(self, name: str) -> BpfMap:
        pointer = lib().bpf_object__find_map_by_name(self._ptr(), name.encode())
        if not pointer:
            raise KernelError(f"failed to find map {name} in {self.path}")
        return BpfMap(int(pointer), name)

    def program(self, name: str) -> BpfProgram:
        pointer = lib().bpf_object__find_program_by_name(self._ptr(), name.encode())
        if not pointer:
            raise KernelError(f"failed to find program {name} in {self.path}")
        return BpfProgram(int(pointer), name)

    def variable_offset(self, section: str, variable: str) -> int:
        """Offset of a global variable within its data section, from the object's BTF."""
        library = lib()
        btf = library.bpf_object__btf(self._ptr())
        if not btf:
            raise KernelError(f"failed to find BTF in {self.path}")
        section_id = library.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if section_id < 0:
            raise KernelError(f"failed to find section {section} in the BTF of {self.path}")
        datasec = _BtfType.from_address(library.btf__type_by_id(btf, section_id))
        entries = (_BtfVarSecinfo * (datasec.info & 0xFFFF)).from_address(
            library.btf__type_by_id(btf, section_id) + ctypes.sizeof(_BtfType)
        )
        for entry in entries:
            var = _BtfType.from_address(library.btf__type_by_id(btf, entry.type))
            name = library.btf__name_by_offset(btf, var.name_off)
            if name is not None and name.decode() == variable:
                return int(entry.offset)
        raise KernelError(f"failed to find variable {variable} in {section} of {self.path}")

    def write_variable(self, section: str, variable: str, value: ctypes.Structure) -> None:
        """Set a global variable before load (.rodata is frozen by the load)."""
        offset = self.variable_offset(section, variable)
        address, size = self.map(section).initial_value()
        if offset + ctypes.sizeof(value) > size:
            raise KernelError(f"failed to set {variable}: it lies outside {section}")
        ctypes.memmove(address + offset, ctypes.addressof(value), ctypes.sizeof(value))

    def load(self) -> None:
        _messages.clear()
        result = lib().bpf_object__load(self._ptr())
        if result < 0:
            raise _fail("load the BPF object", result)

    def close(self) -> None:
        if self._pointer is not None:
            lib().bpf_object__close(self._pointer)
            self._pointer = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- map operations on fds ----------------------------------------------------------


def _address(buffer: Any) -> int:
    if isinstance(buffer, np.ndarray):
        return int(buffer.ctypes.data)
    return ctypes.addressof(buffer)


def map_lookup(fd: int, key: Any, value: Any) -> bool:
    """Read the value of `key` into `value`; False if there is no such key."""
    result = lib().bpf_map_lookup_elem(fd, _address(key), _address(value))
    if result == -errno_module.ENOENT:
        return False
    _check(result, "read a map entry")
    return True


def map_update(fd: int, key: Any, value: Any, flags: int = BPF_ANY) -> None:
    _check(
        lib().bpf_map_update_elem(fd, _address(key), _address(value), flags), "write a map entry"
    )


def map_delete(fd: int, key: Any) -> bool:
    result = lib().bpf_map_delete_elem(fd, _address(key))
    if result == -errno_module.ENOENT:
        return False
    _check(result, "delete a map entry")
    return True


def _batch_opts() -> BpfMapBatchOpts:
    return BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))


def map_lookup_batch(
    fd: int, key_dtype: np.dtype[Any], value_dtype: np.dtype[Any], chunk: int = 4096
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Every (key, value) of a hash map, as two numpy arrays (no order)."""
    keys_out: list[npt.NDArray[Any]] = []
    values_out: list[npt.NDArray[Any]] = []
    token_in = ctypes.c_uint64(0)
    token_out = ctypes.c_uint64(0)
    opts = _batch_opts()
    first = True
    while True:
        keys = np.zeros(chunk, dtype=key_dtype)
        values = np.zeros(chunk, dtype=value_dtype)
        count = ctypes.c_uint32(chunk)
        result = lib().bpf_map_lookup_batch(
            fd,
            None if first else ctypes.addressof(token_in),
            ctypes.addressof(token_out),
            keys.ctypes.data,
            values.ctypes.data,
            ctypes.byref(count),
            ctypes.addressof(opts),
        )
        if result == -errno_module.ENOSPC and count.value == 0:
            chunk *= 2  # a bucket holds more entries than one chunk
            continue
        if result < 0 and result != -errno_module.ENOENT:
            raise _fail("read a map", result)
        # The last call may return ENOENT together with entries.
        keys_out.append(keys[: count.value])
        values_out.append(values[: count.value])
        if result == -errno_module.ENOENT:
            break
        token_in.value = token_out.value
        first = False
    return np.concatenate(keys_out), np.concatenate(values_out)


def map_update_batch(fd: int, keys: npt.NDArray[Any], values: npt.NDArray[Any]) -> None:
    if len(keys) == 0:
        return
    keys = np.ascontiguousarray(keys)
    values = np.ascontiguousarray(values)
    count = ctypes.c_uint32(len(keys))
    opts = _batch_opts()
    _check(
        lib().bpf_map_update_batch(
            fd, keys.ctypes.data, values.ctypes.data, ctypes.byref(count), ctypes.addressof(opts)
        ),
        "write map entries",
    )


def map_delete_batch(fd: int, keys: npt.NDArray[Any]) -> None:
    if len(keys) == 0:
        return
    keys = np.ascontiguousarray(keys)
    count = ctypes.c_uint32(len(keys))
    opts = _batch_opts()
    _check(
        lib().bpf_map_delete_batch(
            fd, keys.ctypes.data, ctypes.byref(count), ctypes.addressof(opts)
        ),
        "delete map entries",
    )


def percpu_array_sums(fd: int, entries: int) -> list[int]:
    """The per-CPU values (u64) of each index of a per-CPU array, summed over CPUs."""
    cpus = num_possible_cpus()
    values = np.zeros(cpus, dtype=np.uint64)
    key = ctypes.c_uint32(0)
    sums = []
    for index in range(entries):
        key.value = index
        if not map_lookup(fd, key, values):
            raise KernelError(f"failed to read counter {index}")
        sums.append(int(values.sum(dtype=np.uint64)))
    return sums


# -- running and attaching programs -------------------------------------------------


class TestRunner:
    """BPF_PROG_TEST_RUN of one tc program, with the context fields replay needs.

    The options and context are allocated once; `run` only sets the packet and the
    two context fields, so a run costs one system call.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, prog_fd: int) -> None:
        self._fd = prog_fd
        self._ctx = SkBuff()
        self._opts = BpfTestRunOpts(sz=ctypes.sizeof(BpfTestRunOpts))
        self._opts.ctx_in = ctypes.addressof(self._ctx)
        self._opts.ctx_size_in = ctypes.sizeof(SkBuff)
        self._opts.repeat = 1
        self._opts_address = ctypes.addressof(self._opts)
        self._run = lib().bpf_prog_test_run_opts

    def set_cb(self, index: int, value: int) -> None:
        """A word of the context's `cb` for the next runs (replay's -a details)."""
        self._ctx.cb[index] = value

    def run(self, packet: bytes, tstamp: int, mark: int) -> None:
        """Run the program on `packet` (14 to TEST_RUN_MAX_PACKET bytes)."""
        ctx = self._ctx
        ctx.tstamp = tstamp
        ctx.mark = mark
        opts = self._opts
        opts.data_in = packet
        opts.data_size_in = len(packet)
        # libbpf copies back the output size of the last run; left there, it would
        # become a limit (ENOSPC) for the next, longer packet.
        opts.data_size_out = 0
        result = self._run(self._fd, self._opts_address)
        if result < 0:
            raise _fail("run the BPF program on a packet", result)


def run_syscall_program(prog_fd: int, ctx: ctypes.Structure) -> int:
    """BPF_PROG_TEST_RUN of a SEC("syscall") program with `ctx` as its context (the
    kernel copies the context back); returns the program's return value."""
    opts = BpfTestRunOpts(sz=ctypes.sizeof(BpfTestRunOpts))
    opts.ctx_in = ctypes.addressof(ctx)
    opts.ctx_size_in = ctypes.sizeof(ctx)
    result = lib().bpf_prog_test_run_opts(prog_fd, ctypes.addressof(opts))
    if result < 0:
        raise _fail("run the BPF clean-up program", result)
    return int(opts.retval)


def link_create(prog_fd: int, ifindex: int, attach_type: int) -> int:
    """A tcx link (BPF_TCX_INGRESS/EGRESS) of a program to an interface: its fd."""
    return _check(lib().bpf_link_create(prog_fd, ifindex, attach_type, None), "attach the program")


def tc_hook(ifindex: int, attach_point: int) -> BpfTcHook:
    return BpfTcHook(sz=ctypes.sizeof(BpfTcHook), ifindex=ifindex, attach_point=attach_point)


def tc_hook_create(hook: BpfTcHook) -> bool:
    """Create the clsact qdisc; False if one exists already (then it is not ours)."""
    result = lib().bpf_tc_hook_create(ctypes.addressof(hook))
    if result == -errno_module.EEXIST:
        return False
    _check(result, "create the tc hook")
    return True


def tc_hook_destroy(hook: BpfTcHook) -> None:
    _check(lib().bpf_tc_hook_destroy(ctypes.addressof(hook)), "remove the tc hook")


def tc_attach(hook: BpfTcHook, prog_fd: int, priority: int = 0) -> BpfTcOpts:
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), prog_fd=prog_fd, priority=priority)
    _check(
        lib().bpf_tc_attach(ctypes.addressof(hook), ctypes.addressof(opts)), "attach the program"
    )
    return opts


def tc_detach(hook: BpfTcHook, opts: BpfTcOpts) -> None:
    detach = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=opts.handle, priority=opts.priority)
    _check(
        lib().bpf_tc_detach(ctypes.addressof(hook), ctypes.addressof(detach)), "detach the program"
    )


def iter_fields(struct: type[ctypes.Structure]) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of each field of a ctypes structure."""
    for name, *_ in struct._fields_:
        descriptor = getattr(struct, name)
        yield name, int(descriptor.offset), int(descriptor.size)


U64_MAX = _U64_MAX
