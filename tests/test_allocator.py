"""The one place that sets glibc's allocator (geoapp.allocator): settings only grow, so callers never undo each
other."""

import geoapp.allocator as allocator


def test_allocator_settings_only_grow(monkeypatch):
    """Two callers of the allocator rule: the later, smaller request does not undo the earlier one."""
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_applied", {})
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    assert allocator.keep_freed_buffers(1 << 30, 2 << 30, 64 << 20)
    assert allocator.keep_freed_buffers(32 << 20, 1 << 30)  # e.g. the world generator after the engine
    assert calls == [(allocator.M_MMAP_THRESHOLD, 1 << 30), (allocator.M_TRIM_THRESHOLD, 2 << 30),
                     (allocator.M_TOP_PAD, 64 << 20)]
