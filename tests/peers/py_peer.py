"""A foreign surfaceport peer in Python, written only from docs/protocol.md.

    py_peer.py recv NAME COUNT          receive COUNT frames, verify the pattern
    py_peer.py subscribe NAME POLICY COUNT
                                        subscribe to the publisher NAME (SUBSCRIBE with
                                        POLICY latest|queue, depth 1), then like recv,
                                        returning a CREDIT after each frame
    py_peer.py produce NAME W H COUNT   send COUNT BGRA frames of its own memfd,
                                        waiting for a reply frame after each
    py_peer.py script NAME              a subscriber (or plain peer) driven line by line from
                                        stdin, to probe a publisher's rules (see script()):
                                        connect | subscribe POLICY DEPTH | credit N | raw HEX |
                                        raw-fd HEX | recv MS | hold MS | sleep MS | exit
    py_peer.py storm NAME COUNT         connect to NAME and close at once, COUNT times, as fast
                                        as it can; prints "storm N ms"
    py_peer.py check NAME COUNT         listen as NAME, accept one client, and judge
                                        COUNT messages by every receiver rule of
                                        docs/protocol.md, in its order: prints "ok"
                                        or the ProtocolError reason for each

The pattern is examples/pattern.ts's; the seed travels as 4 bytes of metadata
(kind 1). Prints "ok ..." / "bad ..." per frame and "done". Standard library
only (Python 3.9+ on Linux).
"""
import ctypes
import fcntl
import json
import mmap
import os
import socket
import stat
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


# --- the receiver rules (docs/protocol.md, "Receiving"), in their order ------------------------

MAX_META = 65536
MAX_SURFACE = 1 << 30
MAX_SAFE = (1 << 53) - 1
# fourcc -> [(bytes per element, horizontal and vertical subsampling)] per plane
FORMATS = {
    0x42475241: [(4, 1, 1)], 0x52474241: [(4, 1, 1)], 0x4C303038: [(1, 1, 1)],
    0x34323076: [(1, 1, 1), (2, 2, 2)], 0x34323066: [(1, 1, 1), (2, 2, 2)],
    0x79343230: [(1, 1, 1), (1, 2, 2), (1, 2, 2)],
}
F_SEAL_FUTURE_WRITE = 0x10
HUGETLBFS_MAGIC = 0x958458F6
_libc = ctypes.CDLL(None, use_errno=True)


class Reject(Exception):
    pass


def check_header(message: bytes):
    if len(message) < 8:
        raise Reject("SHORT_MESSAGE")
    if message[:4] != MAGIC:
        raise Reject("BAD_MAGIC")
    version, kind = struct.unpack_from("<HH", message, 4)
    if version != 1:
        raise Reject("BAD_VERSION")
    if kind != 1:
        raise Reject("BAD_TYPE")
    if len(message) < HEADER_SIZE:
        raise Reject("SHORT_MESSAGE")
    header_size, flags, fourcc, width, height, plane_count, meta_length = struct.unpack_from(
        "<HHIIIII", message, 8)
    if header_size != HEADER_SIZE:
        raise Reject("BAD_HEADER")
    meta_kind = flags & 3
    if flags & ~3 or meta_kind == 3:
        raise Reject("BAD_META")
    if fourcc not in FORMATS:
        raise Reject("BAD_GEOMETRY")
    if not 1 <= plane_count <= 3:
        raise Reject("BAD_GEOMETRY")
    if meta_length > MAX_META:
        raise Reject("TOO_LARGE")
    if len(message) != HEADER_SIZE + meta_length:
        raise Reject("SHORT_MESSAGE")
    if (meta_kind == 0 and meta_length != 0) or (meta_kind == 2 and meta_length == 0):
        raise Reject("BAD_META")
    sequence, timestamp, alloc_size, reserved = struct.unpack_from("<QqQQ", message, 32)
    if reserved != 0:
        raise Reject("BAD_HEADER")
    if sequence > MAX_SAFE or abs(timestamp) > MAX_SAFE:
        raise Reject("BAD_HEADER")
    if alloc_size > MAX_SURFACE:
        raise Reject("TOO_LARGE")
    planes = [struct.unpack_from("<QIIII", message, 64 + 24 * i) for i in range(plane_count)]
    if any(offset > alloc_size for offset, *_ in planes):
        raise Reject("BAD_GEOMETRY")
    shapes = FORMATS[fourcc]
    if alloc_size == 0 or not (1 <= width <= 32768 and 1 <= height <= 32768):
        raise Reject("BAD_GEOMETRY")
    if len(planes) != len(shapes) or (len(shapes) > 1 and (width % 2 or height % 2)):
        raise Reject("BAD_GEOMETRY")
    extents = []
    for (offset, bpr, pw, ph, bpe), (want_bpe, sx, sy) in zip(planes, shapes):
        if (pw, ph, bpe) != (width // sx, height // sy, want_bpe) or bpr < pw * bpe:
            raise Reject("BAD_GEOMETRY")
        end = offset + bpr * ph  # the last row's padding counts
        if end > alloc_size or any(offset < e and s < end for s, e in extents):
            raise Reject("BAD_GEOMETRY")
        extents.append((offset, end))
    if any(message[64 + 24 * plane_count:HEADER_SIZE]):
        raise Reject("BAD_HEADER")
    return meta_kind, alloc_size, message[HEADER_SIZE:]


def check_descriptor(fd: int, alloc_size: int) -> None:
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)  # 1. seals: before the size
    except OSError:
        raise Reject("NOT_SHARED_MEMORY")
    size_seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
    if seals & size_seals != size_seals:
        st = os.fstat(fd)
        raise Reject("NOT_SHARED_MEMORY" if not stat.S_ISREG(st.st_mode) or st.st_nlink > 0 else "UNSEALED")
    if seals & (fcntl.F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        raise Reject("WRITE_SEALED")
    st = os.fstat(fd)  # 2. size, final now
    if not stat.S_ISREG(st.st_mode):
        raise Reject("NOT_SHARED_MEMORY")
    if st.st_size != alloc_size:
        raise Reject("SIZE_MISMATCH")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDWR:  # 3. access mode
        raise Reject("BAD_ACCESS")
    statfs = ctypes.create_string_buffer(120)  # 4. not hugetlbfs
    if _libc.fstatfs(fd, statfs) != 0:
        raise OSError(ctypes.get_errno(), "fstatfs")
    if struct.unpack_from("<q", statfs.raw)[0] & 0xFFFFFFFF == HUGETLBFS_MAGIC:
        raise Reject("HUGE_PAGES")
    try:  # 5. a description of our own to map
        mapping_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise Reject("NO_PERMISSION")
    try:
        mmap.mmap(mapping_fd, alloc_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()
    except OSError:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        raise Reject("WRITE_SEALED" if seals & (fcntl.F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) else "UNMAPPABLE")
    finally:
        os.close(mapping_fd)


def check_meta(kind: int, meta: bytes) -> None:
    if kind != 2:
        return
    def refuse_constant(name):
        raise ValueError(name)  # NaN and Infinity are not JSON
    try:
        json.loads(meta.decode("utf-8"), parse_constant=refuse_constant)  # a BOM stays and is refused
    except ValueError:
        raise Reject("BAD_META")


def judge(sock: socket.socket) -> str:
    cmsg_space = socket.CMSG_SPACE(8 * 4)
    message, ancdata, msg_flags, _ = sock.recvmsg(HEADER_SIZE + MAX_META + 1, cmsg_space, socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"<{len(data) // 4}i", data[:len(data) - len(data) % 4]))
    try:
        if msg_flags & socket.MSG_CTRUNC:
            raise Reject("CONTROL_TRUNCATED")
        if msg_flags & socket.MSG_TRUNC:
            raise Reject("MESSAGE_TRUNCATED")
        meta_kind, alloc_size, meta = check_header(message)
        if not fds:
            raise Reject("NO_HANDLE")
        if len(fds) > 1:
            raise Reject("EXTRA_HANDLES")
        check_descriptor(fds[0], alloc_size)
        check_meta(meta_kind, meta)
        return "ok"
    except Reject as reject:
        return str(reject)
    finally:
        for fd in fds:
            os.close(fd)


def check(name: str, count: int) -> int:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(b"\0surfaceport/" + name.encode())
    server.listen(1)
    print("listening", flush=True)
    sock, _ = server.accept()
    for _ in range(count):
        print(judge(sock), flush=True)
    print("done", flush=True)
    return 0


def control(kind: int, field: int, value: int) -> bytes:
    """A publish/subscribe control message: SUBSCRIBE (2) or CREDIT (3), 16 bytes."""
    return MAGIC + struct.pack("<HHHHI", 1, kind, 16, field, value)


def script(name: str) -> int:
    """Runs one command per stdin line and prints what happened, so a test can
    script a peer that reads or does not read, credits or does not, and sends
    malformed control messages:

      connect                 connect to NAME (nothing is sent)
      subscribe POLICY DEPTH  send SUBSCRIBE (latest|queue, any depth: not checked here)
      credit N                send CREDIT N
      raw HEX                 send these bytes as one message
      raw-fd HEX              send them with one descriptor (a memfd) attached
      recv MS                 wait up to MS for a message: "frame SEQ" (its fd closed),
                              "none" or "eof"
      hold MS                 like recv, but keep the frame's fd open until exit
      sleep MS                sleep
      exit                    exit
    Each command prints "ok" (or its result) when done."""
    import select
    import time
    sock = None
    held = []
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command = words[0]
        if command == "connect":
            sock = connect(name)
            print("connected", flush=True)
        elif command == "subscribe":
            sock.send(control(2, {"latest": 1, "queue": 2}[words[1]], int(words[2])))
            print("ok", flush=True)
        elif command == "credit":
            sock.send(control(3, 0, int(words[1])))
            print("ok", flush=True)
        elif command == "raw":
            sock.send(bytes.fromhex(words[1]))
            print("ok", flush=True)
        elif command == "raw-fd":
            memfd = os.memfd_create("py_peer", os.MFD_CLOEXEC)
            socket.send_fds(sock, [bytes.fromhex(words[1])], [memfd])
            os.close(memfd)
            print("ok", flush=True)
        elif command in ("recv", "hold"):
            ready, _, _ = select.select([sock], [], [], int(words[1]) / 1000)
            if not ready:
                print("none", flush=True)
                continue
            try:
                message, fds, _flags, _addr = socket.recv_fds(sock, HEADER_SIZE + 65536, 4)
            except ConnectionResetError:
                message, fds = b"", []
            if not message and not fds:
                print("eof", flush=True)
                continue
            sequence = struct.unpack_from("<Q", message, 32)[0]
            for fd in fds:
                (held.append if command == "hold" else os.close)(fd)
            print(f"frame {sequence}", flush=True)
        elif command == "sleep":
            time.sleep(int(words[1]) / 1000)
            print("ok", flush=True)
        elif command == "exit":
            break
        else:
            print(f"unknown command {command}", file=sys.stderr, flush=True)
            return 2
    return 0


def main() -> int:
    mode, name = sys.argv[1], sys.argv[2]
    if mode == "check":
        return check(name, int(sys.argv[3]))
    if mode == "script":
        return script(name)
    if mode == "storm":
        import time
        started = time.monotonic()
        for _ in range(int(sys.argv[3])):
            connect(name).close()
        print(f"storm {round((time.monotonic() - started) * 1000)} ms", flush=True)
        return 0
    sock = connect(name)
    print("connected", flush=True)
    count = int(sys.argv[3]) if mode == "recv" else 0
    if mode == "subscribe":
        policy = {"latest": 1, "queue": 2}[sys.argv[3]]
        count = int(sys.argv[4])
        try:
            sock.send(MAGIC + struct.pack("<HHHHI", 1, 2, 16, policy, 1))  # SUBSCRIBE, depth 1
        except (BrokenPipeError, ConnectionResetError):
            print("eof", flush=True)  # the publisher hung up between accept and SUBSCRIBE
            return 1
    if mode in ("recv", "subscribe"):
        for _ in range(count):
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
            if mode == "subscribe":
                sock.send(MAGIC + struct.pack("<HHHHI", 1, 3, 16, 0, 1))  # CREDIT 1: send the next
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
