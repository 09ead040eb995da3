"""src/pping/kernel/abi.py must have the layout of bpf/pping.h, field for field.

Checked twice: against the BTF of the compiled object (bpftool), which is what the
kernel and libbpf see, and against the header compiled by the host's C compiler
(sizeof/offsetof), which also covers the libbpf and uapi structures that the ctypes
binding declares by hand.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from pping import engine, events, packet
from pping.errors import KernelError
from pping.kernel import abi, libbpf
from pping.kernel.program import object_path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "bpf" / "pping.h"


def _object() -> Path | None:
    try:
        return object_path()
    except KernelError:
        return None


def _bpftool() -> str | None:
    return shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if Path(p).exists()), None
    )


# -- BTF -------------------------------------------------------------------------------


@dataclass
class BtfType:
    kind: str
    name: str
    attrs: dict[str, str]
    members: list[tuple[str, dict[str, str]]] = field(default_factory=list)


_TYPE_LINE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_MEMBER_LINE = re.compile(r"^\s+'([^']*)'(.*)$")
_DATASEC_LINE = re.compile(r"^\s+(type_id=.*) \(VAR '([^']*)'\)$")
_ATTR = re.compile(r"(\w+)=([^\s,]+)")


@cache
def btf_types() -> dict[int, BtfType]:
    obj, tool = _object(), _bpftool()
    if obj is None or tool is None:
        pytest.skip("needs the built BPF object (make -C bpf) and bpftool")
    text = subprocess.run(
        [tool, "btf", "dump", "file", str(obj), "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    types: dict[int, BtfType] = {}
    current: BtfType | None = None
    for line in text.splitlines():
        if match := _TYPE_LINE.match(line):
            current = BtfType(match[2], match[3], dict(_ATTR.findall(match[4])))
            types[int(match[1])] = current
        elif (match := _MEMBER_LINE.match(line)) and current is not None:
            current.members.append((match[1], dict(_ATTR.findall(match[2]))))
        elif (match := _DATASEC_LINE.match(line)) and current is not None:
            current.members.append((match[2], dict(_ATTR.findall(match[1]))))
    return types


def btf_named(kind: str, name: str) -> BtfType:
    found = [t for t in btf_types().values() if t.kind == kind and t.name == name]
    assert len(found) == 1, f"{kind} {name} is not in the object's BTF exactly once"
    return found[0]


def btf_size(type_id: int) -> int:
    t = btf_types()[type_id]
    if t.kind in ("INT", "STRUCT", "UNION", "ENUM", "ENUM64"):
        return int(t.attrs["size"])
    if t.kind in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        return btf_size(int(t.attrs["type_id"]))
    if t.kind == "ARRAY":
        return btf_size(int(t.attrs["type_id"])) * int(t.attrs["nr_elems"])
    if t.kind == "PTR":
        return 8
    raise AssertionError(f"unexpected BTF kind {t.kind}")


@pytest.mark.parametrize("name", list(abi.STRUCTS))
def test_struct_matches_btf(name: str) -> None:
    struct = abi.STRUCTS[name]
    btf = btf_named("STRUCT", name)
    assert int(btf.attrs["size"]) == ctypes.sizeof(struct)
    expected = [
        (member, int(attrs["bits_offset"]) // 8, btf_size(int(attrs["type_id"])))
        for member, attrs in btf.members
    ]
    assert list(libbpf.iter_fields(struct)) == expected
    assert abi.dtype_of(struct).itemsize == ctypes.sizeof(struct)


@pytest.mark.parametrize("name", list(abi.ENUMS))
def test_enum_matches_btf(name: str) -> None:
    btf = btf_named("ENUM", name)
    assert {member: int(attrs["val"]) for member, attrs in btf.members} == abi.ENUMS[name]


@pytest.mark.parametrize(
    ("name", "python_enum", "prefix"),
    [
        ("pping_flow_event_type", events.FlowEventType, "FLOW_EVENT_"),
        ("pping_event_reason", events.EventReason, "EVENT_REASON_"),
        ("pping_event_source", events.EventSource, "EVENT_SOURCE_"),
        ("pping_table", events.Table, "TABLE_"),
    ],
)
def test_event_enums_are_the_vocabulary(name: str, python_enum: type, prefix: str) -> None:
    btf = btf_named("ENUM", name)
    values = {m[len(prefix) :]: int(a["val"]) for m, a in btf.members if m.startswith(prefix)}
    assert values == {member.name: int(member.value) for member in python_enum}  # type: ignore[attr-defined]


def test_config_is_in_rodata() -> None:
    rodata = btf_named("DATASEC", ".rodata")
    assert abi.CONFIG_VARIABLE in {name for name, _ in rodata.members}
    var = btf_named("VAR", abi.CONFIG_VARIABLE)
    target = btf_types()[int(var.attrs["type_id"])]
    while target.kind in ("CONST", "VOLATILE"):
        target = btf_types()[int(target.attrs["type_id"])]
    assert (target.kind, target.name) == ("STRUCT", "pping_config")


def test_maps_and_programs_exist() -> None:
    maps = btf_named("DATASEC", ".maps")
    assert {name for name, _ in maps.members} == {
        abi.MAP_FLOWS,
        abi.MAP_TIMESTAMPS,
        abi.MAP_EVENTS,
        abi.MAP_COUNTERS,
        abi.MAP_WARNINGS,
        abi.MAP_EXPIRED,
        *(name for copy in abi.MAP_AGGREGATES for name in copy),
    }
    functions = {t.name for t in btf_types().values() if t.kind == "FUNC"}
    expected = {abi.PROGRAM_INGRESS, abi.PROGRAM_EGRESS, abi.PROGRAM_XDP, abi.PROGRAM_CLEANUP}
    assert expected <= functions


# -- the vocabulary behind the counters --------------------------------------------------


def test_counter_reasons_are_the_parsers_and_engines() -> None:
    reasons = set(abi.COUNTER_SKIP_REASONS.values())
    assert reasons <= set(packet.SKIP_REASONS) | {engine.SKIP_SYN, engine.SKIP_UNTRACKED}
    # What only user space can hit: the link layer, which the replay converts.
    assert set(packet.SKIP_REASONS) - reasons == {packet.SKIP_LINKTYPE, packet.SKIP_BAD_LINK}
    fields = set(events.Counters().as_dict()) - {"packets", "skipped"}
    # Expiry is counted by the clean-up program's runs (struct cleanup_args); the
    # pressure controller decides in user space.
    assert fields - set(abi.COUNTER_FIELDS.values()) == {
        "timestamps_expired",
        "flows_expired",
        "sampling_raised",
        "sampling_relaxed",
        "timeout_shortened",
        "timeout_restored",
        "timestamps_grown",
        "flows_grown",
    }


# -- the C compiler's view -------------------------------------------------------------


def _c_fields(name: str, struct: type[ctypes.Structure]) -> list[str]:
    return [
        f'printf("%s %zu %zu\\n", "{name}.{field}", offsetof(struct {name}, {field}), '
        f"sizeof(((struct {name} *)0)->{field}));"
        for field, _, _ in libbpf.iter_fields(struct)
        if not field.startswith("_")
    ]


@cache
def c_layout() -> dict[str, tuple[int, int]]:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("needs a C compiler and the libbpf headers (libbpf-dev)")
    lines = []
    for name, struct in {**abi.STRUCTS, **libbpf.C_STRUCTS}.items():
        lines.append(f'printf("%s %zu 0\\n", "{name}", sizeof(struct {name}));')
        lines += _c_fields(name, struct)
    source = "\n".join(
        [
            "#include <stddef.h>",
            "#include <stdio.h>",
            "#include <linux/bpf.h>",
            "#include <bpf/libbpf.h>",
            "#include <bpf/bpf.h>",
            f'#include "{HEADER}"',
            "int main(void) {",
            *lines,
            "return 0; }",
        ]
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "layout.c", Path(tmp) / "layout"
        src.write_text(source)
        subprocess.run([compiler, str(src), "-o", str(exe)], check=True, capture_output=True)
        output = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    layout = {}
    for line in output.splitlines():
        key, first, second = line.split()
        layout[key] = (int(first), int(second))
    return layout


@pytest.mark.parametrize("name", [*abi.STRUCTS, *libbpf.C_STRUCTS])
def test_struct_matches_c(name: str) -> None:
    struct = {**abi.STRUCTS, **libbpf.C_STRUCTS}[name]
    layout = c_layout()
    assert layout[name][0] == ctypes.sizeof(struct)
    for field_name, offset, size in libbpf.iter_fields(struct):
        if field_name.startswith("_"):
            continue  # padding of a structure declared only in part
        assert layout[f"{name}.{field_name}"] == (offset, size), field_name
