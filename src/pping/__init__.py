"""pping: passive round-trip-time monitoring from TCP timestamps and ICMP echo."""

__version__ = "0.1.0"
