"""The tracking connection's RESP3 reader, on frames redis-server 7 sent (captured with
``HELLO 3`` and ``CLIENT TRACKING ON``), whole and cut at every byte."""

from __future__ import annotations

import pytest

from tickpipe.store.redis_tracking import ReplyError, _Incomplete, _Push, pack, parse

XRANGE_REPLY = (
    b"*2\r\n*2\r\n$15\r\n1796544254446-0\r\n*4\r\n$1\r\nn\r\n$1\r\n1\r\n$5\r\narrow\r\n$3\r\nabc\r\n"
    b"*2\r\n$15\r\n1796544254547-0\r\n*2\r\n$1\r\nn\r\n$1\r\n2\r\n"
)
INVALIDATE = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\nzz\r\n"
INVALIDATE_ALL = b">2\r\n$10\r\ninvalidate\r\n_\r\n"
HELLO_REPLY = b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n"


def parse_all(data: bytes) -> list[object]:
    buf, pos, out = bytearray(data), 0, []
    while pos < len(buf):
        value, pos = parse(buf, pos)
        out.append(value)
    return out


def test_replies_and_pushes_as_redis_sends_them() -> None:
    assert parse_all(XRANGE_REPLY) == [
        [
            [b"1796544254446-0", [b"n", b"1", b"arrow", b"abc"]],
            [b"1796544254547-0", [b"n", b"2"]],
        ]
    ]
    push, flush = parse_all(INVALIDATE + INVALIDATE_ALL)
    assert isinstance(push, _Push) and push == [b"invalidate", [b"zz"]]
    assert isinstance(flush, _Push) and flush == [b"invalidate", None]
    assert parse_all(HELLO_REPLY) == [{b"server": b"redis", b"proto": 3, b"modules": []}]


def test_scalars_and_errors() -> None:
    values = parse_all(b"+OK\r\n:42\r\n,1.5\r\n#t\r\n_\r\n$-1\r\n(12345678901234567890\r\n")
    assert values == [b"OK", 42, 1.5, True, None, None, 12345678901234567890]
    (error,) = parse_all(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(error, ReplyError) and str(error).startswith("WRONGTYPE")


@pytest.mark.parametrize("frame", [XRANGE_REPLY, INVALIDATE, HELLO_REPLY])
def test_a_frame_cut_anywhere_waits_for_the_rest(frame: bytes) -> None:
    for cut in range(len(frame)):
        with pytest.raises(_Incomplete):
            parse(bytearray(frame[:cut]), 0)


def test_binary_values_survive_the_round_trip() -> None:
    blob = bytes(range(256)) + b"\r\n$3\r\n"
    command = pack(("XADD", "k", "*", "arrow", blob))
    assert parse_all(command) == [[b"XADD", b"k", b"*", b"arrow", blob]]
