"""core.wheelmeta: the zip's end, the central directory, the METADATA member, probes and
Requires-Dist, from bytes."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from proxpi_min.core import wheelmeta
from proxpi_min.core.byteranges import ByteRange
from proxpi_min.core.errors import UpstreamError
from proxpi_min.core.wheelmeta import (
    PROBE_TAIL,
    TAIL_READ,
    BrokenWheel,
    central_directory,
    find_metadata,
    is_zip_probe,
    member_data,
    metadata_from_ranges,
    metadata_name,
    names_itself,
    requirements,
    tail_read,
)

METADATA = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\nRequires-Dist: dep>=1\n\n"


def _zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _read(content: bytes, filename: str = "pkg-1.0-py3-none-any.whl") -> bytes:
    directory = central_directory(content[-100:] if len(content) > 100 else content, len(content))
    tail = content[directory.offset :]
    member = find_metadata(tail[: directory.size], filename)
    return member_data(content[member.offset :], member)


# Every method zipfile reads, so every wheel pip reads (a build tool may pick bzip2 or LZMA).
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_metadata_member_read_from_bytes(compression):
    content = _zip([("pkg.py", b"x = 1\n" * 100), ("pkg-1.0.dist-info/METADATA", METADATA)], compression)
    directory = central_directory(content, len(content))
    member = find_metadata(content[directory.offset : directory.offset + directory.size], "pkg-1.0-py3-none-any.whl")
    assert member.name == "pkg-1.0.dist-info/METADATA"
    assert member_data(content[member.offset :], member) == METADATA
    assert member_data(content[member.offset : member.offset + 40], member) is None  # too short: read more


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_damaged_bzip2_or_lzma_member_is_a_broken_wheel(compression):
    content = bytearray(_zip([("pkg-1.0.dist-info/METADATA", METADATA * 20)], compression))
    directory = central_directory(bytes(content), len(content))
    member = find_metadata(bytes(content[directory.offset : directory.offset + directory.size]), "pkg-1.0-py3-none-any.whl")
    data_start = member.offset + 30 + len(member.name)
    content[data_start + 12 : data_start + 40] = bytes(28)
    with pytest.raises(BrokenWheel, match="does not decompress|fails its CRC check"):
        member_data(bytes(content[member.offset :]), member)


def test_an_lzma_member_asks_for_no_larger_dictionary_than_it_needs(monkeypatch):
    # liblzma allocates the dictionary a header asks for, whatever the member's size: a
    # crafted header asking 4 GiB is a MemoryError on a small machine.
    import lzma

    content = bytearray(_zip([("pkg-1.0.dist-info/METADATA", METADATA)], zipfile.ZIP_LZMA))
    directory = central_directory(bytes(content), len(content))
    member = find_metadata(bytes(content[directory.offset : directory.offset + directory.size]), "pkg-1.0-py3-none-any.whl")
    data_start = member.offset + 30 + len(member.name)
    content[data_start + 5 : data_start + 9] = struct.pack("<I", 0xFFFFFFFF)
    asked: list = []
    real = lzma.LZMADecompressor

    def recording(*args, **kwargs):
        asked.extend(filter_["dict_size"] for filter_ in kwargs["filters"])
        return real(*args, **kwargs)

    monkeypatch.setattr(lzma, "LZMADecompressor", recording)
    assert member_data(bytes(content[member.offset :]), member) == METADATA
    assert asked and max(asked) <= max(4096, member.size)


def test_end_record_found_in_a_short_tail():
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA)])
    tail = content[-30:]
    directory = central_directory(tail, len(content))
    assert directory.total == len(content) and directory.offset + directory.size <= len(content)


def test_zip64_end_record():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        with archive.open("pkg-1.0.dist-info/METADATA", "w", force_zip64=True) as member:
            member.write(METADATA)
    content = buffer.getvalue()
    directory = central_directory(content, len(content))
    member = find_metadata(content[directory.offset : directory.offset + directory.size], "pkg-1.0-py3-none-any.whl")
    assert member_data(content[member.offset :], member) == METADATA


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip at all" * 4, "not a zip"),
        (_zip([("pkg.py", b"")]), "no .dist-info/METADATA"),
    ],
)
def test_broken_wheels(content, message):
    with pytest.raises(BrokenWheel, match=message) as caught:
        _read(content)
    assert caught.value.status == 502


def test_a_zip64_end_record_cut_short_is_broken():
    # Its signature 46 bytes from the end, the locator and end record after it: the
    # sizes it should hold (at +40) lie past the bytes there are.
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    tail = b"PK\x06\x06" + locator + end
    with pytest.raises(BrokenWheel, match="zip64"):
        central_directory(tail, len(tail))


def test_a_zip64_extra_field_shorter_than_it_says_gives_what_it_holds():
    name = b"pkg-1.0.dist-info/METADATA"
    extra = struct.pack("<HHQ", 1, 64, 100)  # says 64 bytes, holds 8: the compressed size
    header = b"PK\x01\x02" + struct.pack(
        "<HHHHHHIIIHHHHHII", 20, 20, 0, 8, 0, 0, 0, 0xFFFFFFFF, 120, len(name), len(extra), 0, 0, 0, 0, 0
    )
    member = find_metadata(header + name + extra, "pkg-1.0-py3-none-any.whl")
    assert (member.compressed, member.size, member.offset) == (100, 120, 0)


def test_corrupt_member_fails_its_check():
    content = bytearray(_zip([("pkg-1.0.dist-info/METADATA", METADATA)], zipfile.ZIP_STORED))
    at = bytes(content).index(b"Requires-Dist")
    content[at] = ord("r")
    with pytest.raises(BrokenWheel, match="CRC"):
        _read(bytes(content))


def test_directory_pointing_past_the_end():
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA)])
    with pytest.raises(BrokenWheel, match="outside"):
        central_directory(content, 10)


def test_metadata_name_prefers_the_wheels_own_folder():
    names = ["other-2.0.dist-info/METADATA", "Pkg-1.0.dist-info/METADATA", "pkg/sub.dist-info/METADATA"]
    assert metadata_name(names, "pkg-1.0-py3-none-any.whl") == "Pkg-1.0.dist-info/METADATA"
    assert metadata_name(["x-1.dist-info/METADATA"], "pkg-1.0-py3-none-any.whl") == "x-1.dist-info/METADATA"
    with pytest.raises(BrokenWheel, match="more than one"):
        metadata_name(["a-1.dist-info/METADATA", "b-1.dist-info/METADATA"], "pkg-1.0-py3-none-any.whl")


def test_zip_probes():
    assert is_zip_probe(ByteRange(None, 100), None)
    assert is_zip_probe(ByteRange(10 * PROBE_TAIL, None), 10 * PROBE_TAIL + 5)
    assert not is_zip_probe(ByteRange(0, None), 10 * PROBE_TAIL)
    assert not is_zip_probe(ByteRange(0, 99), 1000)  # the file's start, however small
    assert is_zip_probe(ByteRange(900, None), 1000)
    assert not is_zip_probe(ByteRange(100, 200), None)  # size unknown: only suffix ranges


def test_requirements_without_extras():
    metadata = (
        b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
        b"Requires-Dist: Dep_One>=1\n"
        b"Requires-Dist: dep-two[fast] ; python_version >= '3.8'\n"
        b"Requires-Dist: testonly ; extra == 'test'\n"
        b"Requires-Dist: both ; python_version > '3' and extra == \"x\"\n"
        b"Requires-Dist: dep.one\n"
        b"\nbody Requires-Dist: not-a-header\n"
    )
    assert requirements(metadata) == ["dep-one", "dep-two"]
    assert requirements(b"Name: x\n\n") == []


def test_a_member_larger_than_its_directory_says_is_refused():
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA + b"x" * 100_000)])
    directory = central_directory(content, len(content))
    member = find_metadata(content[directory.offset :], "pkg-1.0-py3-none-any.whl")
    with pytest.raises(BrokenWheel, match="CRC"):
        member_data(content[member.offset :], member._replace(size=10))  # inflates no further
    with pytest.raises(BrokenWheel, match="too large"):
        member_data(content[member.offset :], member._replace(size=1 << 40))


def test_tail_read_grows_with_the_wheel_within_bounds():
    assert tail_read(None) == tail_read(0) == TAIL_READ
    assert tail_read(1_000_000) == TAIL_READ
    assert tail_read(16 << 20) == 256 << 10  # numpy's size: a 64th
    assert tail_read(1 << 40) == 512 << 10


class _Ranges:
    """Answers Range header values from *content*, as an index that honours Range does
    (suffix and first-last ranges), and records each one asked; *honoured*: False
    answers as an index that ignores Range."""

    def __init__(self, content: bytes, honoured: bool = True, answered: int = 3, cut: int = 0) -> None:
        self.content = content
        self.honoured = honoured
        self.answered = answered  # reads answered with a range, then None
        self.cut = cut  # this read (counting from 1) gives 40 bytes, whatever was asked
        self.asked: list = []

    def __call__(self, header: str):
        self.asked.append(header)
        if not self.honoured or len(self.asked) > self.answered:
            return None
        spec = header.removeprefix("bytes=")
        total = len(self.content)
        if spec.startswith("-"):
            first, last = max(0, total - int(spec[1:])), total - 1
        else:
            first, last = (int(part) for part in spec.split("-"))
            assert first <= last < total, header  # within the file, as the function must ask
        if len(self.asked) == self.cut:
            last = first + 39
        return self.content[first : last + 1], first, total


def _large_wheel(metadata_first: bool) -> bytes:
    # Incompressible padding (stored) between the METADATA and the directory.
    padding = ("pkg/data.bin", bytes(range(256)) * 2048)
    members = [("pkg-1.0.dist-info/METADATA", METADATA), padding]
    return _zip(members if metadata_first else members[::-1], zipfile.ZIP_STORED)


def test_a_small_wheel_takes_one_read_and_comes_whole():
    content = _zip([("pkg.py", b"x = 1\n"), ("pkg-1.0.dist-info/METADATA", METADATA)])
    ranges, whole = _Ranges(content), []
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", TAIL_READ, on_whole=whole.append) == METADATA
    assert ranges.asked == [f"bytes=-{TAIL_READ}"] and whole == [content]


def test_metadata_at_the_end_of_a_large_wheel_takes_one_read():
    content = _large_wheel(metadata_first=False)
    ranges, whole = _Ranges(content), []
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 4096, on_whole=whole.append) == METADATA
    assert len(ranges.asked) == 1 and whole == []


def test_metadata_at_the_start_is_read_as_a_member_or_from_the_early_read():
    content = _large_wheel(metadata_first=True)
    ranges = _Ranges(content)
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 4096) == METADATA
    assert ranges.asked[0] == "bytes=-4096" and ranges.asked[1].startswith("bytes=0-")
    start = _Ranges(content)("bytes=0-65535")
    ranges = _Ranges(content)
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 4096, early=lambda: start) == METADATA
    assert ranges.asked == ["bytes=-4096"]


@pytest.mark.parametrize("early", [None, "elsewhere", "another size", "cut short"])
def test_an_early_read_that_does_not_fit_leaves_the_member_read(early):
    content = _large_wheel(metadata_first=True)
    start = {
        None: None,
        "elsewhere": (content[100:65636], 100, len(content)),  # not from byte 0
        "another size": (content[:65536], 0, len(content) + 1),  # of another file
        "cut short": (content[:80], 0, len(content)),  # ends within the METADATA member
    }[early]
    ranges = _Ranges(content)
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 4096, early=lambda: start) == METADATA
    assert len(ranges.asked) == 2 and ranges.asked[1].startswith("bytes=0-")


def test_the_early_read_is_waited_for_only_when_needed():
    content = _large_wheel(metadata_first=False)
    waited = []
    assert metadata_from_ranges(_Ranges(content), "pkg-1.0-py3-none-any.whl", 4096, early=waited.append) == METADATA
    assert waited == []


def test_a_directory_beyond_the_first_read_is_read_next():
    names = [(f"pkg/module{n}.py", b"") for n in range(200)]  # a directory of ~9 KB
    content = _zip([*names, ("pkg-1.0.dist-info/METADATA", METADATA)], zipfile.ZIP_STORED)
    ranges = _Ranges(content)
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 100) == METADATA
    directory = central_directory(content, len(content))
    # The directory alone: what lies past it (the end record) was in the first read.
    assert ranges.asked[:2] == ["bytes=-100", f"bytes={directory.offset}-{directory.offset + directory.size - 1}"]


def test_the_member_read_stops_at_the_end_of_the_file():
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA)])  # the member just before the directory
    ranges = _Ranges(content)  # refuses a range past the end
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 30) == METADATA
    assert len(ranges.asked) == 3 and ranges.asked[2].endswith(f"-{len(content) - 1}")


@pytest.mark.parametrize("answered", [1, 2])
def test_a_later_read_without_a_range_gives_none(answered):
    names = [(f"pkg/module{n}.py", b"") for n in range(200)]
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA), *names], zipfile.ZIP_STORED)
    ranges = _Ranges(content, answered=answered)  # the directory's read, or the member's, gets none
    assert metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 100) is None
    assert len(ranges.asked) == answered + 1


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_read_cut_short_is_an_upstream_failure_not_a_broken_wheel(cut):
    # The end's read, the directory's, the member's: each, whole, gives what the next needs.
    names = [(f"pkg/module{n}.py", b"") for n in range(200)]
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA), *names], zipfile.ZIP_STORED)
    assert metadata_from_ranges(_Ranges(content), "pkg-1.0-py3-none-any.whl", 100) == METADATA
    ranges = _Ranges(content, cut=cut)
    with pytest.raises(UpstreamError, match="incomplete: 40 bytes") as raised:
        metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 100)
    assert not isinstance(raised.value, BrokenWheel)
    assert len(ranges.asked) == cut


def test_a_read_of_a_file_of_another_size_is_an_upstream_failure():
    # The wheel was replaced between two reads: their bytes are of different files.
    names = [(f"pkg/module{n}.py", b"") for n in range(200)]
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA), *names], zipfile.ZIP_STORED)
    ranges = _Ranges(content)

    def resized(header: str):
        data, first, total = ranges(header)
        return data, first, total + (len(ranges.asked) > 1)

    with pytest.raises(UpstreamError, match=f"of {len(content) + 1}$") as raised:
        metadata_from_ranges(resized, "pkg-1.0-py3-none-any.whl", 100)
    assert not isinstance(raised.value, BrokenWheel)


def test_a_member_running_past_the_end_of_the_file_is_broken():
    content = bytearray(_zip([("pkg-1.0.dist-info/METADATA", METADATA)], zipfile.ZIP_STORED))
    directory = central_directory(bytes(content), len(content))
    struct.pack_into("<I", content, directory.offset + 20, len(content))  # its compressed size
    ranges = _Ranges(bytes(content))
    with pytest.raises(BrokenWheel, match="runs past the end"):
        metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 30)
    assert ranges.asked[-1] == f"bytes=0-{len(content) - 1}"  # read whole: proven


@pytest.mark.parametrize("lie", ["member-size", "directory-size"])
def test_sizes_past_the_limits_are_refused_before_their_range_is_asked_for(lie, monkeypatch):
    content = bytearray(_large_wheel(metadata_first=True))
    directory = central_directory(bytes(content), len(content))
    if lie == "member-size":  # the METADATA's compressed size, in its directory entry
        struct.pack_into("<I", content, directory.offset + 20, 2**31)
    else:  # the directory's size, in the end record, as if it began at the file's start
        end = bytes(content).rindex(b"PK\x05\x06")
        struct.pack_into("<II", content, end + 12, len(content) - 22, 0)
        monkeypatch.setattr(wheelmeta, "MAX_DIRECTORY", 64 * 1024)  # for a wheel of 0.5 MB
    ranges = _Ranges(bytes(content))
    with pytest.raises(BrokenWheel, match="too large" if lie == "member-size" else "central directory of"):
        metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", TAIL_READ)
    assert ranges.asked == [f"bytes=-{TAIL_READ}"]


def test_a_member_said_to_lie_past_the_end_is_broken_without_asking_for_it():
    # Its range would be refused, and the refusal taken for an index that ignores Range.
    content = bytearray(_zip([("pkg-1.0.dist-info/METADATA", METADATA)]))
    directory = central_directory(bytes(content), len(content))
    struct.pack_into("<I", content, directory.offset + 42, 10_000_000)
    ranges = _Ranges(bytes(content))
    with pytest.raises(BrokenWheel, match="past the end"):
        metadata_from_ranges(ranges, "pkg-1.0-py3-none-any.whl", 100)
    assert ranges.asked == ["bytes=-100"]


def test_an_index_that_ignores_ranges_gives_none_and_a_non_zip_is_broken():
    content = _zip([("pkg-1.0.dist-info/METADATA", METADATA)])
    assert metadata_from_ranges(_Ranges(content, honoured=False), "pkg-1.0-py3-none-any.whl", TAIL_READ) is None
    with pytest.raises(BrokenWheel, match="not a zip file"):
        metadata_from_ranges(_Ranges(b"<html>not a wheel</html>"), "pkg-1.0-py3-none-any.whl", TAIL_READ)
    without = _zip([("pkg.py", b"x = 1\n")])
    with pytest.raises(BrokenWheel, match="METADATA"):
        metadata_from_ranges(_Ranges(without), "pkg-1.0-py3-none-any.whl", TAIL_READ)


@pytest.mark.parametrize(
    "metadata, whole",
    [
        (b"Metadata-Version: 2.1\nName: x\nVersion: 1.0\n\nbody", True),
        (b"Metadata-Version: 2.1\r\nName: x\r\nVersion: 1.0\r\n", True),
        (b"Metadata-Version: 2.1\nName:\n  folded\nVersion:\r\n 1.0\n", True),  # RFC 5322 folding
        (b"", False),
        (b"\x00" * 64, False),
        (b"Metadata-Version: 2.1\nNam", False),
        (b"Metadata-Version: 2.1\nName: x\nVersion:\n", False),
    ],
)
def test_names_itself_tells_a_whole_metadata_file_from_an_emptied_or_cut_one(metadata, whole):
    assert names_itself(metadata) is whole
