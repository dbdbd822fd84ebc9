"""A foreign surfaceport peer in Python, written only from docs/protocol.md.

    py_peer.py recv NAME COUNT          receive COUNT frames, verify the pattern
    py_peer.py produce NAME W H COUNT   send COUNT BGRA frames of its own memfd,
                                        waiting for a reply frame after each

The pattern is examples/pattern.ts's; the seed travels as 4 bytes of metadata
(kind 1). Prints "ok ..." / "bad ..." per frame and "done". Standard library
only (Python 3.9+ on Linux).
"""
import fcntl
import mmap
import os
import socket
import struct
import sys

HEADER_SIZE = 136
MAGIC = b"SPRT"
BGRA = 0x42475241


def pattern(length: int, plane: int, seed: int) -> bytes:
    return bytes((i * 7 + (i >> 11) * 13 + plane * 101 + seed * 31) & 0xFF for i in range(length))


def connect(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(b"\0surfaceport/" + name.encode())  # abstract address, no trailing NUL
    return sock


def parse_header(message: bytes):
    if len(message) < HEADER_SIZE or message[:4] != MAGIC:
        raise ValueError("not a surfaceport message")
    version, kind, header_size, flags, fourcc, width, height, planes, meta_length = struct.unpack_from(
        "<HHHHIIIII", message, 4
    )
    if (version, kind, header_size) != (1, 1, HEADER_SIZE):
        raise ValueError("unsupported header")
    sequence, timestamp, alloc_size = struct.unpack_from("<QqQ", message, 32)
    records = [struct.unpack_from("<QIIII", message, 64 + 24 * i) for i in range(planes)]
    meta = message[HEADER_SIZE:HEADER_SIZE + meta_length]
    return {
        "fourcc": fourcc, "width": width, "height": height, "sequence": sequence,
        "alloc_size": alloc_size, "planes": records, "meta": meta, "flags": flags,
    }


def receive(sock: socket.socket):
    message, fds, _flags, _addr = socket.recv_fds(sock, HEADER_SIZE + 65536, 4)
    if not message and not fds:
        return None, None
    for extra in fds[1:]:
        os.close(extra)
    if len(fds) != 1:
        raise ValueError(f"expected one fd, got {len(fds)}")
    return parse_header(message), fds[0]


def locked_description(fd: int) -> int:
    """A new description of fd with an OFD read lock: what the protocol says a sender sends."""
    held = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    fcntl.fcntl(held, fcntl.F_OFD_SETLK, struct.pack("hhiqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0, 0))
    return held


def main() -> int:
    mode, name = sys.argv[1], sys.argv[2]
    sock = connect(name)
    print("connected", flush=True)
    if mode == "recv":
        for _ in range(int(sys.argv[3])):
            header, fd = receive(sock)
            if header is None:
                print("eof", flush=True)
                return 1
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) != fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW:
                print("bad seals", flush=True)
                return 1
            seed = struct.unpack("<I", header["meta"])[0] if len(header["meta"]) == 4 else 0
            with mmap.mmap(fd, header["alloc_size"], mmap.MAP_SHARED, mmap.PROT_READ) as memory:
                good = all(
                    memory[offset:offset + bpr * height] == pattern(bpr * height, plane, seed)
                    for plane, (offset, bpr, _w, height, _bpe) in enumerate(header["planes"])
                )
            os.close(fd)  # the frame is done: our hold on the sender's surface ends
            fourcc = struct.pack(">I", header["fourcc"]).decode()
            print(f"{'ok' if good else 'bad'} {header['sequence']} {header['width']}x{header['height']} {fourcc}", flush=True)
    elif mode == "produce":
        width, height, count = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        bpr = (width * 4 + 63) // 64 * 64
        alloc = (bpr * height + 4095) // 4096 * 4096
        memfd = os.memfd_create("py_peer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(memfd, alloc)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        memory = mmap.mmap(memfd, alloc, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        for k in range(count):
            memory[0:bpr * height] = pattern(bpr * height, 0, k)
            header = bytearray(HEADER_SIZE)
            header[0:4] = MAGIC
            struct.pack_into("<HHHHIIIII", header, 4, 1, 1, HEADER_SIZE, 1, BGRA, width, height, 1, 4)
            struct.pack_into("<QqQ", header, 32, k, 0, alloc)
            struct.pack_into("<QIIII", header, 64, 0, bpr, width, height, 4)
            held = locked_description(memfd)
            socket.send_fds(sock, [bytes(header) + struct.pack("<I", k)], [held])
            os.close(held)  # the queued message holds its own reference
            reply, fd = receive(sock)
            if reply is None:
                print("eof", flush=True)
                return 1
            os.close(fd)
            print(f"sent {k}", flush=True)
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
