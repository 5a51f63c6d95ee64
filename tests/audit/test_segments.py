"""Reading the segment files from a seq on: only the segment that holds it, then the next ones."""

from __future__ import annotations

from pathlib import Path

import orjson

from audit.segments import SegmentFileSink, segment_paths
from audit.sinks import MemorySink


def line(seq: int) -> bytes:
    return orjson.dumps({"pad": "x" * 40, "seq": seq})


def filled(directory: Path, count: int) -> SegmentFileSink:
    sink = SegmentFileSink(directory, segment_bytes=300)  # a few lines per segment: many segments
    for seq in range(1, count + 1):
        sink.append([line(seq)])
    return sink


def test_read_from_a_seq_returns_that_line_and_every_later_one_across_segments(tmp_path: Path) -> None:
    sink = filled(tmp_path / "t", 40)
    assert len(segment_paths(tmp_path / "t")) > 5
    for seq in (1, 7, 23, 40):
        assert [found for found, _ in sink.read_from(seq)] == [line(n) for n in range(seq, 41)]
    assert list(sink.read_from(41)) == []
    sink.close()


def test_a_cursor_resumes_after_the_line_it_came_with_also_after_rotation(tmp_path: Path) -> None:
    sink = filled(tmp_path / "t", 10)
    cursor = next(after for found, after in sink.read_from(1) if found == line(10))
    for seq in range(11, 30):
        sink.append([line(seq)])
    assert [found for found, _ in sink.read_from(11, cursor)] == [line(n) for n in range(11, 30)]
    sink.close()


def test_read_from_never_parses_the_segments_before_the_one_holding_the_seq(tmp_path: Path) -> None:
    sink = filled(tmp_path / "t", 40)
    sink.close()
    first = segment_paths(tmp_path / "t")[0][1]
    head = first.read_bytes().split(b"\n", 1)[0]
    first.write_bytes(head + b"\n" + b"not json at all\n")  # only a segment's first line may be read
    reopened = SegmentFileSink(tmp_path / "t", segment_bytes=300)
    assert [found for found, _ in reopened.read_from(30)] == [line(n) for n in range(30, 41)]
    reopened.close()


def test_the_memory_sink_reads_from_a_seq_too() -> None:
    sink = MemorySink()
    sink.append([line(n) for n in range(1, 6)])
    found = list(sink.read_from(3))
    assert [x for x, _ in found] == [line(3), line(4), line(5)]
    sink.append([line(6)])
    assert [x for x, _ in sink.read_from(6, found[-1][1])] == [line(6)]
