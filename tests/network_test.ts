/**
 * `cli send` / `cli receive` against real GStreamer 1.26 (the trixie chroot):
 * a test pattern crosses from one network namespace to another over a veth
 * pair (or 127.0.0.1 where namespaces cannot be made: printed), in every
 * mode, checked by pixels (exactly in raw mode, within a tolerance when
 * compressed) and by timestamps (exactly: each frame paints its number, and
 * the far side's frame must carry the timestamp the sender gave that very
 * frame). With packets dropped by nftables in the receiving namespace, the
 * receiver keeps going, counts what it lost, and never hands a frame on
 * with another frame's timestamp.
 *
 * @module
 */

import assert from "node:assert/strict";
import { publish, subscribe, type Subscription, SurfacePool, toRGBA } from "../mod.ts";
import { FrameGapCounter, SenderTimestamps } from "../src/gst/network.ts";
import type { NetworkFrameMeta } from "../src/gst/network.ts";
import { microsOfNtpNanos, ntpNanosOfMicros } from "../src/gst/timestamp_meta.ts";
import { encodeMetaRecord, MetaRecordReader, SenderMetas } from "../src/gst/network_meta.ts";
import { ProtocolError } from "../src/core/errors.ts";
import { GST, missingInChroot, within } from "./gst_helpers.ts";
import { Child, paintBGRA, processAlive, processTempDir, sleep } from "./helpers.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const FLAGS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-net",
];

async function run(command: string, args: string[]): Promise<{ ok: boolean; text: string }> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { ok: out.success, text: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

/** Two namespaces joined by a veth pair, or why not. */
interface Net {
  /** Prefix for a command run in the sending / receiving side ([] on loopback). */
  sender: string[];
  receiver: string[];
  /** Where the sender sends to, where the receiver binds. */
  to: string;
  bind: string;
  /** The receiving namespace's name (for nft), if any. */
  receiverNs?: string;
  close(): Promise<void>;
}

/**
 * Deletes the namespaces that network tests killed outright (SIGKILL, a
 * timeout: no close ran) left behind: those named after a process that is
 * gone. (What ran in them died with the test process: Child.)
 */
async function removeDeadProcessesNamespaces(): Promise<void> {
  const listed = await run("ip", ["netns", "list"]);
  for (const [, name, pid] of listed.text.matchAll(/^(sp[AB](\d+))\b/gm)) {
    if (Number(pid) === Deno.pid) continue;
    if (!processAlive(Number(pid))) await run("ip", ["netns", "del", name]);
  }
}

async function makeNet(): Promise<Net> {
  await removeDeadProcessesNamespaces();
  const a = `spA${Deno.pid}`;
  const b = `spB${Deno.pid}`;
  const loopback: Net = {
    sender: [],
    receiver: [],
    to: "127.0.0.1",
    bind: "127.0.0.1",
    close: () => Promise.resolve(),
  };
  const steps: [string, string[]][] = [
    ["ip", ["netns", "add", a]],
    ["ip", ["netns", "add", b]],
    ["ip", [
      "link",
      "add",
      `va${Deno.pid}`,
      "netns",
      a,
      "type",
      "veth",
      "peer",
      "name",
      `vb${Deno.pid}`,
      "netns",
      b,
    ]],
    ["ip", ["-n", a, "addr", "add", "10.231.0.1/24", "dev", `va${Deno.pid}`]],
    ["ip", ["-n", b, "addr", "add", "10.231.0.2/24", "dev", `vb${Deno.pid}`]],
    ["ip", ["-n", a, "link", "set", `va${Deno.pid}`, "up"]],
    ["ip", ["-n", b, "link", "set", `vb${Deno.pid}`, "up"]],
    ["ip", ["-n", a, "link", "set", "lo", "up"]],
    ["ip", ["-n", b, "link", "set", "lo", "up"]],
  ];
  const remove = async () => {
    for (const ns of [a, b]) {
      // Anything still running in them is ours (the CLIs and their gst-launch children).
      const pids = await run("ip", ["netns", "pids", ns]);
      for (const pid of pids.text.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // gone already
        }
      }
      await run("ip", ["netns", "del", ns]);
    }
  };
  for (const [command, args] of steps) {
    let result;
    try {
      result = await run(command, args);
    } catch (error) {
      result = { ok: false, text: (error as Error).message };
    }
    if (!result.ok) {
      await remove();
      console.log(
        `network tests: over 127.0.0.1 (no network namespaces: ${command} ${
          args.join(" ")
        }: ${result.text.trim()})`,
      );
      return loopback;
    }
  }
  console.log("network tests: across two network namespaces joined by a veth pair");
  return {
    sender: ["ip", "netns", "exec", a],
    receiver: ["ip", "netns", "exec", b],
    to: "10.231.0.2",
    bind: "10.231.0.2",
    receiverNs: b,
    close: remove,
  };
}

function cli(prefix: string[], args: string[]): Child {
  const env = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    SURFACEPORT_GST_LAUNCH: `chroot ${GST.root} gst-launch-1.0`,
  };
  const words = [...prefix, Deno.execPath(), "run", ...FLAGS, MAIN, ...args];
  return new Child(words[0], words.slice(1), env);
}

/** Stops a CLI the way Ctrl-C does (so it stops its gst-launch), then makes sure. */
async function stop(child: Child): Promise<void> {
  try {
    child.process.kill("SIGTERM");
    await child.exit(8000);
  } catch {
    // killed below
  }
  await child[Symbol.asyncDispose]();
}

const W = 128;
const H = 96;
/** The timestamp the sender gives frame n: odd µs, so a rounding or a frame off shows. */
const T0 = 1_796_000_000_000_007;
const PERIOD = 33_333;
const timestampOf = (n: number) => T0 + n * PERIOD;

/** Frame n's number in the top band: 8 bits, 16 px wide each, white for 1. */
function bit(n: number, x: number): boolean {
  return ((n >> (x >> 4)) & 1) === 1;
}

/** Raw: every byte below the band depends on the position and the frame. */
function texture(n: number, x: number, y: number): [number, number, number] {
  if (y < 32) return bit(n, x) ? [235, 235, 235] : [16, 16, 16];
  return [(x * 4 + n) & 255, (y * 5 + n * 3) & 255, (x + y * 2 + 40) & 255];
}

/** Compressed: flat areas, red left and blue right below the band. */
function flat(n: number, x: number, y: number): [number, number, number] {
  if (y < 32) return bit(n, x) ? [235, 235, 235] : [16, 16, 16];
  return x < W / 2 ? [220, 30, 30] : [30, 40, 210];
}

/** Frame n's metadata: JSON for even n, bytes for odd n (both kinds cross). */
function metaOf(n: number): unknown {
  return n % 2 === 0 ? { n, text: "é" } : new Uint8Array([n & 255, n >> 8, 7]);
}

/** Publishes frames n = 0, 1, ... at ~30/s, frame n with timestamp {@link timestampOf}(n). */
async function publishFrames(
  name: string,
  paint: (n: number, x: number, y: number) => [number, number, number],
  signal: AbortSignal,
): Promise<void> {
  using publisher = publish(name);
  using pool = new SurfacePool({ width: W, height: H, format: "BGRA", maxSurfaces: 8 });
  for (let n = 0; !signal.aborted; n++) {
    {
      using surface = await pool.acquire({ timeout: 2000 });
      paintBGRA(surface, (x, y) => paint(n, x, y));
      await publisher.send(surface, metaOf(n), { timestamp: timestampOf(n) });
    }
    await sleep(33);
  }
}

/** The frame number painted in a received frame's band (RGBA), or -1 if a bit is unclear. */
function numberOf(rgba: Uint8Array): number {
  let n = 0;
  for (let b = 0; b < 8; b++) {
    const value = rgba[(16 * W + b * 16 + 8) * 4 + 1];
    if (value > 170) n |= 1 << b;
    else if (value > 80) return -1;
  }
  return n;
}

/** The sender's frame numbers modulo 256 whose timestamp `timestamp` is (-1 if none). */
function numberOfTimestamp(timestamp: number): number {
  const n = (timestamp - T0) / PERIOD;
  return Number.isInteger(n) && n >= 0 ? n % 256 : -1;
}

interface Received {
  rgba: Uint8Array;
  n: number;
  timestamp: number;
  meta: NetworkFrameMeta;
}

async function receiveOne(frames: Subscription): Promise<Received> {
  using frame = await within(frames.receive(), 10000, "a frame over the network");
  assert.deepEqual([frame.surface.width, frame.surface.height], [W, H]);
  const rgba = toRGBA(frame.surface);
  return {
    rgba,
    n: numberOf(rgba),
    timestamp: frame.timestamp,
    meta: frame.meta as NetworkFrameMeta,
  };
}

/** The far side's frame has exactly the timestamp (and metadata) the sender gave the frame it shows. */
function checkTimestamp(got: Received): void {
  assert.deepEqual(got.meta.timestamp, got.timestamp, "meta.timestamp is the frame's timestamp");
  // A record may come after its frame on a loaded machine (counted as missing): when it is
  // there it must be this frame's.
  checkSenderMeta(got, false);
  assert.deepEqual(
    numberOfTimestamp(got.timestamp),
    got.n,
    `frame ${got.n} arrived with timestamp ${got.timestamp}, the sender's for frame ${
      (got.timestamp - T0) / PERIOD
    }`,
  );
}

/** Whatever sender metadata a frame came with is that of the frame its timestamp names. */
function checkSenderMeta(got: Received, required = true): void {
  const n = (got.timestamp - T0) / PERIOD;
  const { meta, metaBytes } = got.meta;
  if (meta === undefined && metaBytes === undefined) {
    assert(!required, `frame ${n} arrived without its metadata`);
    return;
  }
  if (n % 2 === 0) assert.deepEqual(meta, metaOf(n), `metadata of frame ${n}`);
  else {
    const bytes = Uint8Array.from(atob(metaBytes ?? ""), (c) => c.charCodeAt(0));
    assert.deepEqual(bytes, metaOf(n), `metadata bytes of frame ${n}`);
  }
}

/** Raw: every pixel exactly as painted. */
function checkExact(got: Received): void {
  assert(got.n >= 0, "the frame number is unreadable");
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const want = texture(got.n, x, y);
      const k = (y * W + x) * 4;
      for (let c = 0; c < 3; c++) {
        if (got.rgba[k + c] !== want[c]) {
          throw new Error(
            `pixel (${x},${y}) of frame ${got.n}: got ${got.rgba.slice(k, k + 3)}, sent ${want}`,
          );
        }
      }
    }
  }
}

/** Compressed: the centres of the flat areas within 24 levels. */
function checkColours(got: Received): void {
  assert(got.n >= 0, "the frame number is unreadable");
  let worst = 0;
  for (const [cx, cy] of [[W / 4, 64], [(3 * W) / 4, 64], [8, 16], [W - 8, 16]]) {
    for (let y = cy - 4; y < cy + 4; y++) {
      for (let x = cx - 4; x < cx + 4; x++) {
        const want = flat(got.n, x, y);
        for (let c = 0; c < 3; c++) {
          worst = Math.max(worst, Math.abs(got.rgba[(y * W + x) * 4 + c] - want[c]));
        }
      }
    }
  }
  assert(worst <= 24, `a colour of frame ${got.n} is off by ${worst} levels (tolerance 24)`);
}

/** Drops every `every`th packet to `port` in the receiving namespace until the returned stop. */
async function injectLoss(
  net: Net,
  port: number,
  every: number,
): Promise<{ dropped(): Promise<number>; stop(): Promise<void> }> {
  const nft = (args: string[]) =>
    run("ip", ["netns", "exec", net.receiverNs!, "chroot", GST.root!, "nft", ...args]);
  const rules = [
    ["add", "table", "inet", "sploss"],
    ["add", "chain", "inet", "sploss", "in", "{ type filter hook input priority 0; }"],
    [
      "add",
      "rule",
      "inet",
      "sploss",
      "in",
      "udp",
      "dport",
      String(port),
      "numgen",
      "inc",
      "mod",
      String(every),
      "0",
      "counter",
      "drop",
    ],
  ];
  for (const rule of rules) {
    const result = await nft(rule);
    assert(result.ok, `nft ${rule.join(" ")}: ${result.text}`);
  }
  return {
    async dropped() {
      const listed = await nft(["list", "table", "inet", "sploss"]);
      return Number(/packets (\d+)/.exec(listed.text)?.[1] ?? 0);
    },
    async stop() {
      await nft(["delete", "table", "inet", "sploss"]);
    },
  };
}

const missing = await missingInChroot([
  "rtpgstpay",
  "rtpgstdepay",
  "rtpjitterbuffer",
  "rtphdrextntp64",
  "vp8enc",
  "vp8dec",
  "rtpvp8pay",
  "rtpvp8depay",
  "x264enc",
  "openh264dec",
]);
if (missing) console.log(`network tests skipped: ${missing}`);
const skip = missing ? `(skipped: ${missing}) ` : "";
const hasNft = !missing && await missingInChroot([], ["/usr/sbin/nft"]) === undefined;
const missingSrt = missing ?? await missingInChroot(["srtsink", "srtsrc"]);

interface Case {
  mode: "raw" | "vp8" | "h264" | "srt";
  /** Drop one packet in this many while checking under loss (0: no loss phase). */
  lossEvery: number;
  portOffset: number;
}

/** Sends the pattern in `mode` and checks pixels and timestamps, then (if asked) under loss. */
async function crossNetwork({ mode, lossEvery, portOffset }: Case): Promise<void> {
  const net = await makeNet();
  const dir = await processTempDir("sp-net-");
  const source = `${dir}/card.sock`;
  const target = `${dir}/out.sock`;
  const stopPublishing = new AbortController();
  const raw = mode === "raw";
  const publishing = publishFrames(source, raw ? texture : flat, stopPublishing.signal);
  const port = 20000 + portOffset + (Deno.pid % 20000);
  const shape = raw ? ["--format", "BGRA", "--size", `${W}x${H}`] : ["--format", "RGBA"];
  const receiver = cli(net.receiver, [
    "receive",
    `${net.bind}:${port}`,
    target,
    "--mode",
    mode,
    ...shape,
    "--interval",
    "300",
  ]);
  const sender = cli(net.sender, [
    "send",
    source,
    `${net.to}:${port}`,
    "--mode",
    mode,
    ...(raw ? [] : ["--bitrate", "2000"]),
  ]);
  const check = raw ? checkExact : checkColours;
  try {
    const announced = await sender.line("receive with:", 20000);
    if (raw) assert(announced.includes(`--format BGRA --size ${W}x${H}`), announced);
    using frames = await subscribe(target, { timeout: 20000, policy: "queue" });
    // The first frames may come before a keyframe settled, without a timestamp (the first after
    // the sender's pipeline started), or before the metadata's TCP connection was up: from the
    // first with its metadata on, every frame counts.
    let first: Received | undefined;
    for (let i = 0; i < 60 && !first; i++) {
      const got = await receiveOne(frames);
      if (i >= 3 && (got.meta.meta !== undefined || got.meta.metaBytes !== undefined)) first = got;
    }
    assert(first, "no frame of the first 60 arrived with its metadata");
    for (let i = 0; i < 10; i++) {
      const got = i === 0 ? first : await receiveOne(frames);
      check(got);
      checkTimestamp(got);
    }
    if (!lossEvery) return;
    if (!net.receiverNs || !hasNft) {
      console.log("packet loss not injected: needs the two namespaces and nft in the chroot");
      return;
    }
    const loss = await injectLoss(net, port, lossEvery);
    // Under loss: whatever arrives carries its own frame's timestamp or none, never another's.
    // Raw frames arrive whole or not at all, and SRT retransmits, so their pixels name the frame.
    // A VP8 frame decoded after a lost one shows stale blocks of an older frame (the decoder's
    // concealment), so there the timestamps are checked to be the sender's, in order.
    const exactPixels = mode !== "vp8";
    let timed = 0;
    let checked = 0;
    let last = -Infinity;
    const until = performance.now() + 4000;
    while (performance.now() < until) {
      const got = await receiveOne(frames);
      if (exactPixels) check(got);
      if (got.meta.timestamp === null) continue;
      timed++;
      assert(got.timestamp > last, `timestamp ${got.timestamp} after ${last}`);
      assert(numberOfTimestamp(got.timestamp) >= 0, `${got.timestamp} is not a sender's`);
      checkSenderMeta(got, false);
      last = got.timestamp;
      if (exactPixels) {
        checkTimestamp(got);
        checked++;
      }
    }
    const dropped = await loss.dropped();
    assert(dropped > 0, "nft dropped nothing");
    const line = await receiver.line(/lost \d+ {2}untimed \d+/, 5000);
    console.log(
      `${mode} under loss (${dropped} packets dropped by nft): ${timed} timed frames, ` +
        `${checked} checked against their pixels; ${line.trim()}`,
    );
    assert(timed > 0, "no frame arrived under loss with a timestamp");
    if (exactPixels) assert(checked > 0, "no frame's timestamp was checked against its pixels");
    if (mode !== "srt") {
      await receiver.line(/lost [1-9]/, 10000); // SRT retransmits what nft dropped
    }
    await loss.stop();
    // And recovers: good frames again once the loss stops (a keyframe at least every 15). The
    // frames queued meanwhile are read first.
    const recovered = performance.now() + 1500;
    while (performance.now() < recovered) await receiveOne(frames);
    for (let i = 0; i < 5; i++) {
      const got = await receiveOne(frames);
      check(got);
      checkTimestamp(got);
    }
  } finally {
    await stop(sender);
    await stop(receiver);
    stopPublishing.abort();
    await publishing.catch(() => {});
    await net.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const lossNote = hasNft ? "" : " (loss: skipped, no nft in the chroot)";

Deno.test({
  name:
    `${skip}send / receive raw: every pixel and every timestamp exactly; with 1 packet in 40 dropped, frames that lost one are dropped and none carries another frame's timestamp${lossNote}`,
  ignore: !!missing,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => crossNetwork({ mode: "raw", lossEvery: 40, portOffset: 0 }),
});

Deno.test({
  name:
    `${skip}send / receive VP8: colours within 24 levels and exact timestamps; with every 8th packet dropped the receiver counts what it lost, no frame carries another frame's timestamp, and it recovers${lossNote}`,
  ignore: !!missing,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => crossNetwork({ mode: "vp8", lossEvery: 8, portOffset: 1 }),
});

Deno.test({
  name: `${skip}send / receive H.264: colours within 24 levels and exact timestamps`,
  ignore: !!missing,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => crossNetwork({ mode: "h264", lossEvery: 0, portOffset: 2 }),
});

Deno.test({
  name: `${
    missingSrt ? `(skipped: ${missingSrt}) ` : ""
  }send / receive H.264 RTP over SRT: colours and exact timestamps, also with every 8th packet dropped (SRT retransmits)${lossNote}`,
  ignore: !!missingSrt,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => crossNetwork({ mode: "srt", lossEvery: 8, portOffset: 3 }),
});

Deno.test("FrameGapCounter counts gaps of whole frame periods, not jitter", () => {
  const counter = new FrameGapCounter();
  const period = 33_333_333;
  let t = 0;
  for (let i = 0; i < 30; i++) {
    t += period + ((i * 7919) % 5_000_000) - 2_500_000; // ±2.5 ms jitter
    counter.note(t);
  }
  assert.deepEqual(counter.lost, 0);
  t += period * 4; // three frames missing
  counter.note(t);
  assert.deepEqual(counter.lost, 3);
  t += period;
  counter.note(t);
  assert.deepEqual(counter.lost, 3);
});

Deno.test("a timestamp crosses NTP's 32.32 format exactly, also when GStreamer's rounding takes 1 ns off", () => {
  for (const micros of [0, 1, 999_999, T0, timestampOf(255), -1_000_000, 2_085_978_495_999_999]) {
    const nanos = ntpNanosOfMicros(micros)!;
    // What rtphdrextntp64 does: ns to 32.32 rounding down, and back rounding down.
    const ntp = (nanos << 32n) / 1_000_000_000n;
    const back = (ntp * 1_000_000_000n) >> 32n;
    assert(back === nanos || back === nanos - 1n);
    assert.deepEqual(microsOfNtpNanos(back), micros);
    assert.deepEqual(microsOfNtpNanos(nanos), micros);
  }
  // Outside NTP era 0 (or not whole µs) it is not sent at all.
  assert.deepEqual(ntpNanosOfMicros(2_085_978_496_000_000), undefined);
  assert.deepEqual(ntpNanosOfMicros(-2_208_988_800_000_000), undefined);
  assert.deepEqual(ntpNanosOfMicros(1.5), undefined);
});

Deno.test("SenderTimestamps trusts one timestamp per frame, never a merged or repeated one", () => {
  const stamps = new SenderTimestamps();
  const a = ntpNanosOfMicros(T0)!;
  const b = ntpNanosOfMicros(timestampOf(1))!;
  assert.deepEqual(stamps.take([a, a, 0n]), T0); // every packet's copy, and an empty extension
  assert.deepEqual(stamps.take([a]), null); // the previous frame's again
  assert.deepEqual(stamps.take([b, a]), null); // packets of two frames
  assert.deepEqual(stamps.take([]), null);
  assert.deepEqual(stamps.take([0n]), null);
  assert.deepEqual(stamps.take([b]), timestampOf(1));
  assert.deepEqual(stamps.untimed, 4);
});

Deno.test("metadata records survive any split of the stream; a malformed one is a ProtocolError", () => {
  const records = [
    encodeMetaRecord(T0, { n: 0 }),
    encodeMetaRecord(timestampOf(1), new Uint8Array([1, 2, 3])),
    encodeMetaRecord(-5, undefined),
  ];
  const stream = new Uint8Array(records.reduce((sum, r) => sum + r.length, 0));
  let at = 0;
  for (const record of records) {
    stream.set(record, at);
    at += record.length;
  }
  for (const step of [1, 3, 7, stream.length]) {
    const got: [number, unknown][] = [];
    const reader = new MetaRecordReader((timestamp, meta) => got.push([timestamp, meta]));
    for (let i = 0; i < stream.length; i += step) reader.push(stream.subarray(i, i + step));
    assert.deepEqual(got, [[T0, { n: 0 }], [timestampOf(1), new Uint8Array([1, 2, 3])], [
      -5,
      undefined,
    ]]);
  }
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setUint32(0, 0x7fff_ffff, true);
  assert.throws(() => new MetaRecordReader(() => {}).push(huge), ProtocolError);
  const badKind = encodeMetaRecord(T0, { n: 0 });
  badKind[12] = 9;
  assert.throws(() => new MetaRecordReader(() => {}).push(badKind), ProtocolError);
});

Deno.test("SenderMetas keeps the newest records only, and each is taken once", () => {
  const metas = new SenderMetas(3);
  for (let n = 0; n < 5; n++) metas.put(timestampOf(n), { n });
  assert.deepEqual(metas.take(timestampOf(1)).found, false); // evicted
  assert.deepEqual(metas.take(timestampOf(4)), { found: true, meta: { n: 4 } });
  assert.deepEqual(metas.take(timestampOf(4)).found, false);
});
