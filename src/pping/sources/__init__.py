"""Packet sources: capture files and, later, the kernel data path."""
