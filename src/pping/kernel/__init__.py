"""The kernel data path: the eBPF program of bpf/ and what user space needs around it.

- `abi`: the Python mirror of bpf/pping.h (structures, dtypes, enum values).
- `libbpf`: a small ctypes binding over the system's libbpf.so.1.
- `program`: open, configure, load the object; counters; event decoding.
- `ringbuf`: the ring buffer's consumer, through mmap.
- `replay`: a capture through the program with BPF_PROG_TEST_RUN (`--datapath kernel`).

Nothing here loads libbpf at import time. See docs/kernel.md.
"""
