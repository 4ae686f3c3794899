"""Socket reads come from the heap once a client's session is open (glibc's mmap threshold)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="the dynamic mmap threshold is glibc's",
)

# Run in a fresh interpreter: this test process has long since freed large blocks itself.
# mallinfo2() (glibc 2.33+) counts the blocks malloc holds as mmaps of their own.
_PROBE = textwrap.dedent(
    """
    import asyncio
    import ctypes

    from hailuo_async._transport import Timeouts, Transport


    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
            )
        ]


    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2


    async def main():
        transport = Transport(
            timeouts=Timeouts(), max_connections=4, max_response_bytes=1 << 20
        )
        transport.session  # opened: this is where the threshold is raised
        await transport.aclose()
        before = libc.mallinfo2().hblks
        # What asyncio's transport allocates for each recv(), 64 of them alive at once: more
        # than the heap has free, so without the raised threshold most would be mmaps.
        buffers = [bytes(256 * 1024) for _ in range(64)]
        print(libc.mallinfo2().hblks - before, len(buffers))


    asyncio.run(main())
    """
)


def _has_mallinfo2() -> bool:
    import ctypes

    return hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="mallinfo2 needs glibc 2.33 or later")
def test_socket_read_buffers_come_from_the_heap_once_the_session_is_open() -> None:
    """64 live 256 KiB read buffers add no mmapped block after the session opens."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and a fixed script
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["0", "64"], done.stderr
