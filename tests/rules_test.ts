/**
 * Every receiver rule of docs/protocol.md, one message per rule (each with a
 * single fault, or none), judged by three receivers written separately: the
 * library, the Python peer and the C peer (`check` mode, which print the
 * reason they would reject with). All three must give the reason the spec
 * names, and the library's listener must end with its descriptor count
 * unchanged.
 *
 * @module
 */

import assert from "node:assert/strict";
import { listen, ProtocolError } from "../mod.ts";
import { computeGeometry, type SurfaceGeometry } from "../src/core/geometry.ts";
import { LINUX } from "../src/linux/structs.ts";
import { encodeHeader, HEADER_SIZE, META_BYTES, META_JSON, META_NONE } from "../src/wire/wire.ts";
import { Child, fdTargets, openFds, settleRuntimeFds, uniqueName } from "./helpers.ts";
import { libc } from "../ffi/linux.ts";
import { cString } from "../src/linux/libc.ts";
import {
  closeAll,
  makeMemfd,
  MFD_HUGETLB,
  openPath,
  RawPeer,
  reopenAs,
  smallGeometry,
} from "./hostile/raw.ts";

const linux = Deno.build.os === "linux";

interface Rule {
  name: string;
  /** The reason the spec names, or "ok". */
  expect: string;
  message: () => Uint8Array;
  /** The descriptors to send (closed by the caller after sending). */
  fds: () => number[];
}

interface HeaderOptions {
  metaKind?: number;
  meta?: Uint8Array;
  sequence?: bigint;
  timestamp?: number;
  mutate?: (view: DataView) => void;
}

function message(geometry: SurfaceGeometry, options: HeaderOptions = {}): Uint8Array {
  const meta = options.meta ?? new Uint8Array(0);
  const bytes = new Uint8Array(HEADER_SIZE + meta.length);
  const view = new DataView(bytes.buffer);
  encodeHeader(
    view,
    geometry,
    options.metaKind ?? META_NONE,
    meta.length,
    options.sequence ?? 0n,
    options.timestamp ?? 0,
  );
  bytes.set(meta, HEADER_SIZE);
  options.mutate?.(view);
  return bytes;
}

const SMALL = smallGeometry();
const memfdOf = (size: number, seals?: number) => () => [makeMemfd(size, { seals })];
const sealedSmall = memfdOf(SMALL.allocSize);
const SIZE_SEALS = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW;
const utf8 = (text: string) => new TextEncoder().encode(text);

function reopened(flags: number): () => number[] {
  return () => {
    const memfd = makeMemfd(SMALL.allocSize);
    try {
      return [reopenAs(memfd, flags)];
    } finally {
      closeAll(memfd);
    }
  };
}

/** A y420 64x32 layout with explicit plane offsets (bytesPerRow 64, 32, 32). */
function y420(offsets: [number, number, number], allocSize: number): SurfaceGeometry {
  return {
    width: 64,
    height: 32,
    format: "y420",
    allocSize,
    planes: [
      { offset: offsets[0], bytesPerRow: 64, width: 64, height: 32, bytesPerElement: 1 },
      { offset: offsets[1], bytesPerRow: 32, width: 32, height: 16, bytesPerElement: 1 },
      { offset: offsets[2], bytesPerRow: 32, width: 32, height: 16, bytesPerElement: 1 },
    ],
  };
}

/**
 * A tmpfs file with a name in /dev/shm, of SMALL's size, made through libc (Deno asks for
 * --allow-all to touch /dev), or why there is none.
 */
function makeShmFile(): { path: string } | { missing: string } {
  if (!linux) return { missing: "not Linux" };
  const path = `/dev/shm/surfaceport-rules-${Deno.pid}-${Math.random().toString(36).slice(2)}`;
  const lib = libc();
  const fd = lib.open(
    cString(path),
    LINUX.O_RDWR | LINUX.O_CREAT | LINUX.O_EXCL | LINUX.O_CLOEXEC,
    0o600,
  );
  if (fd < 0) return { missing: `open(${path}, O_CREAT) failed` };
  const sized = lib.ftruncate(fd, BigInt(SMALL.allocSize)) === 0;
  lib.close(fd);
  globalThis.addEventListener("unload", () => lib.unlink(cString(path)));
  return sized ? { path } : { missing: `ftruncate(${path}) failed` };
}
const shm = makeShmFile();
if ("missing" in shm) console.warn(`rules: the /dev/shm rule is skipped: ${shm.missing}`);
const HUGE = computeGeometry(512, 1024, "BGRA");
/** Undefined if a huge-page memfd can be made here; else why not. */
const hugePagesMissing = linux
  ? (() => {
    try {
      closeAll(makeMemfd(HUGE.allocSize, { flags: LINUX.MFD_ALLOW_SEALING | MFD_HUGETLB }));
      return undefined;
    } catch (error) {
      return (error as Error).message;
    }
  })()
  : "not Linux";
const hugePagesWork = hugePagesMissing === undefined;
if (linux && !hugePagesWork) {
  console.warn(
    `rules: the huge-page rule is skipped: memfd_create(MFD_HUGETLB) failed here ` +
      `(${hugePagesMissing}; reserve pages with: echo 4 > /proc/sys/vm/nr_hugepages)`,
  );
}
// A tight last row: 64 BGRA pixels in rows of 320 bytes, allocSize ending at the last pixel.
const TIGHT: SurfaceGeometry = {
  ...SMALL,
  planes: [{ ...SMALL.planes[0], bytesPerRow: 320 }],
  allocSize: 320 * 31 + 256,
};
const SLACK: SurfaceGeometry = { ...SMALL, allocSize: SMALL.allocSize + 100 };

function rules(shmFile: string | undefined): Rule[] {
  const list: Rule[] = [
    { name: "a valid message", expect: "ok", message: () => message(SMALL), fds: sealedSmall },
    // --- the descriptor: seals, then size, then access mode, then filesystem ---
    {
      name: "unsealed and of the wrong size: the seals are checked first",
      expect: "UNSEALED",
      message: () => message(SMALL),
      fds: memfdOf(4096, 0),
    },
    {
      name: "sealed, of the wrong size",
      expect: "SIZE_MISMATCH",
      message: () => message(SMALL),
      fds: memfdOf(4096),
    },
    {
      name: "F_SEAL_FUTURE_WRITE counts as write-sealed",
      expect: "WRITE_SEALED",
      message: () => message(SMALL),
      fds: memfdOf(SMALL.allocSize, SIZE_SEALS | LINUX.F_SEAL_FUTURE_WRITE),
    },
    {
      name: "F_SEAL_WRITE",
      expect: "WRITE_SEALED",
      message: () => message(SMALL),
      fds: memfdOf(SMALL.allocSize, SIZE_SEALS | LINUX.F_SEAL_WRITE),
    },
    {
      name: "sealing left open (no F_SEAL_SEAL) is accepted",
      expect: "ok",
      message: () => message(SMALL),
      fds: memfdOf(SMALL.allocSize, SIZE_SEALS),
    },
    {
      name: "an O_RDONLY descriptor",
      expect: "BAD_ACCESS",
      message: () => message(SMALL),
      fds: reopened(LINUX.O_RDONLY),
    },
    {
      name: "an O_WRONLY descriptor",
      expect: "BAD_ACCESS",
      message: () => message(SMALL),
      fds: reopened(1),
    },
    {
      name: "a memfd made without MFD_ALLOW_SEALING",
      expect: "UNSEALED",
      message: () => message(SMALL),
      fds: () => [makeMemfd(SMALL.allocSize, { flags: 0, seals: 0 })],
    },
    // --- plane layout ---
    {
      name: "a last row without its padding inside allocSize",
      expect: "BAD_GEOMETRY",
      message: () => message(TIGHT),
      fds: memfdOf(TIGHT.allocSize),
    },
    {
      name: "Cb and Cr at the same offset",
      expect: "BAD_GEOMETRY",
      message: () => message(y420([0, 2048, 2048], 4096)),
      fds: memfdOf(4096),
    },
    {
      name: "chroma over luma",
      expect: "BAD_GEOMETRY",
      message: () =>
        message(computeGeometry(64, 32, "420v"), { mutate: (v) => v.setBigUint64(88, 0n, true) }),
      fds: memfdOf(computeGeometry(64, 32, "420v").allocSize),
    },
    {
      name: "planes in reverse memory order (Cr, Cb, then Y)",
      expect: "ok",
      message: () => message(y420([1024, 512, 0], 3072)),
      fds: memfdOf(3072),
    },
    {
      name: "allocSize 100 bytes over what the planes need, not a multiple of 4096",
      expect: "ok",
      message: () => message(SLACK),
      fds: memfdOf(SLACK.allocSize),
    },
    // --- header fields ---
    {
      name: "headerSize 200",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { mutate: (v) => v.setUint16(8, 200, true) }),
      fds: sealedSmall,
    },
    {
      name: "reserved not zero",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { mutate: (v) => v.setBigUint64(56, 1n, true) }),
      fds: sealedSmall,
    },
    {
      name: "a plane record past planeCount not zero",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { mutate: (v) => v.setUint32(100, 7, true) }),
      fds: sealedSmall,
    },
    {
      name: "sequence 2^53-1",
      expect: "ok",
      message: () => message(SMALL, { sequence: (1n << 53n) - 1n }),
      fds: sealedSmall,
    },
    {
      name: "sequence 2^53",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { sequence: 1n << 53n }),
      fds: sealedSmall,
    },
    {
      name: "sequence 2^64-1",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { sequence: (1n << 64n) - 1n }),
      fds: sealedSmall,
    },
    {
      name: "timestamp -(2^53-1)",
      expect: "ok",
      message: () => message(SMALL, { timestamp: -Number.MAX_SAFE_INTEGER }),
      fds: sealedSmall,
    },
    {
      name: "timestamp 2^53",
      expect: "BAD_HEADER",
      message: () => message(SMALL, { mutate: (v) => v.setBigInt64(40, 1n << 53n, true) }),
      fds: sealedSmall,
    },
    // --- metadata ---
    {
      name: "metadata kind 3",
      expect: "BAD_META",
      message: () => message(SMALL, { metaKind: 3, meta: utf8("{}") }),
      fds: sealedSmall,
    },
    {
      name: "kind 1 (bytes) of length 0",
      expect: "ok",
      message: () => message(SMALL, { metaKind: META_BYTES }),
      fds: sealedSmall,
    },
    {
      name: "kind 0 with bytes",
      expect: "BAD_META",
      message: () => message(SMALL, { meta: utf8("ab") }),
      fds: sealedSmall,
    },
    {
      name: "kind 2 (JSON) of length 0",
      expect: "BAD_META",
      message: () => message(SMALL, { metaKind: META_JSON }),
      fds: sealedSmall,
    },
    {
      name: "JSON with a UTF-8 byte-order mark",
      expect: "BAD_META",
      message: () => message(SMALL, { metaKind: META_JSON, meta: utf8("\ufeff{}") }),
      fds: sealedSmall,
    },
    {
      name: "JSON NaN",
      expect: "BAD_META",
      message: () => message(SMALL, { metaKind: META_JSON, meta: utf8("NaN") }),
      fds: sealedSmall,
    },
    {
      name: "valid JSON (nested, escapes, exponent, a top-level scalar is fine too)",
      expect: "ok",
      message: () =>
        message(SMALL, {
          metaKind: META_JSON,
          meta: utf8('{"a":[1,-2.5e3,"x\\u00e9\\n"],"b":{}}'),
        }),
      fds: sealedSmall,
    },
    {
      name: "JSON text that is a bare scalar",
      expect: "ok",
      message: () => message(SMALL, { metaKind: META_JSON, meta: utf8(" null ") }),
      fds: sealedSmall,
    },
  ];
  if (shmFile) {
    list.push({
      name: "a /dev/shm file",
      expect: "NOT_SHARED_MEMORY",
      message: () => message(SMALL),
      fds: () => [openPath(shmFile)],
    });
  }
  if (hugePagesWork) {
    list.push({
      name: "a huge-page memfd",
      expect: "HUGE_PAGES",
      message: () => message(HUGE),
      fds: () => [makeMemfd(HUGE.allocSize, { flags: LINUX.MFD_ALLOW_SEALING | MFD_HUGETLB })],
    });
  }
  return list;
}

async function sendAll(name: string, list: Rule[]): Promise<void> {
  const raw = RawPeer.connect(name);
  try {
    await sendEach(raw, list);
  } finally {
    raw.close();
  }
}

/** Sends every rule's message on `raw`; the descriptors each rule made are closed once it is sent. */
async function sendEach(raw: RawPeer, list: Rule[]): Promise<void> {
  for (const rule of list) {
    const fds = rule.fds();
    try {
      await raw.sendWaiting(rule.message(), { fds });
    } finally {
      closeAll(...fds);
    }
  }
}

/** Runs `list` against a peer in `check` mode and returns its verdicts. */
async function judgeWithPeer(command: string, args: string[], list: Rule[]): Promise<string[]> {
  const name = uniqueName("rules");
  await using peer = new Child(command, [...args, "check", name, String(list.length)]);
  await peer.line("listening");
  await sendAll(name, list);
  const verdicts: string[] = [];
  for (let i = 0; i < list.length; i++) verdicts.push(await peer.line(/./));
  assert.equal(await peer.line(/./), "done");
  assert.equal((await peer.exit()).code, 0, peer.stderr);
  return verdicts;
}

function assertVerdicts(judge: string, list: Rule[], verdicts: string[]): void {
  const wrong = list.flatMap((rule, i) =>
    verdicts[i] === rule.expect ? [] : [`${rule.name}: ${verdicts[i]}, expected ${rule.expect}`]
  );
  assert.deepEqual(wrong, [], `${judge} disagrees with docs/protocol.md`);
}

function has(command: string, args: string[]): boolean {
  try {
    return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

function theRules(): Rule[] {
  return rules("path" in shm ? shm.path : undefined);
}

Deno.test({
  name:
    "rules: the library judges every rule of docs/protocol.md as the spec says, fd count unchanged",
  ignore: !linux,
  async fn() {
    const list = theRules();
    await settleRuntimeFds();
    const name = uniqueName("rules");
    using listener = listen(name);
    const accepted = listener.accept({ timeout: 10000 });
    const raw = RawPeer.connect(name);
    try {
      using channel = await accepted;
      // The baseline is taken before the sender (in this process) makes any rule's descriptors:
      // taken while it runs, it would count the ones in flight, closed by the end.
      const baseline = openFds();
      const sending = sendEach(raw, list);
      const verdicts: string[] = [];
      for (let i = 0; i < list.length; i++) {
        try {
          using frame = await channel.receive({ timeout: 10000 });
          const bytes = frame.surface.bytes(0);
          bytes[bytes.length - 1] ^= 1; // every accepted frame is touched at its far end
          verdicts.push("ok");
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          verdicts.push(error.reason);
        }
      }
      await sending;
      assertVerdicts("the library", list, verdicts);
      // The connection is the same; what the frames brought is gone (the cache holds mappings,
      // no fds), and nothing was closed that was open before.
      assert.deepEqual(fdTargets(baseline), [], "descriptors leaked");
      assert.deepEqual(openFds(), baseline, "descriptors leaked or closed");
    } finally {
      raw.close();
    }
  },
});

Deno.test({
  name: "rules: the Python peer (check mode) judges every rule as the spec says",
  ignore: !linux || !has("python3", ["-c", "import socket; socket.send_fds"]),
  async fn() {
    const list = theRules();
    const script = new URL("./peers/py_peer.py", import.meta.url).pathname;
    assertVerdicts("py_peer.py", list, await judgeWithPeer("python3", [script], list));
  },
});

Deno.test({
  name: "rules: the C peer (check mode) judges every rule as the spec says",
  ignore: !linux || !has("cc", ["--version"]),
  async fn() {
    const list = theRules();
    const source = new URL("./peers/c_peer.c", import.meta.url).pathname;
    const dir = await Deno.makeTempDir({ prefix: "surfaceport-rules-c-" });
    try {
      const built = await new Deno.Command("cc", {
        args: ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", `${dir}/c_peer`, source],
      }).output();
      assert.ok(built.success, new TextDecoder().decode(built.stderr));
      assertVerdicts("c_peer.c", list, await judgeWithPeer(`${dir}/c_peer`, [], list));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
