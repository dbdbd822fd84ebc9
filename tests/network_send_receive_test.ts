/**
 * `cli send` / `cli receive` against real GStreamer 1.26 (the trixie chroot):
 * a test pattern crosses from one network namespace to another over a veth
 * pair (or 127.0.0.1 where namespaces cannot be made: printed), in every
 * mode, checked by pixels (exactly in raw mode, within a tolerance when
 * compressed) and by timestamps (exactly: each frame paints its number, and
 * the far side's frame must carry the timestamp the sender gave that very
 * frame: tests/network_frames.ts). With packets dropped by nftables in the
 * receiving namespace, the receiver keeps going, counts what it lost, and
 * never hands a frame on with another frame's timestamp.
 *
 * @module
 */

import assert from "node:assert/strict";
import { subscribe } from "../mod.ts";
import { GST, missingInChroot } from "./gst_helpers.ts";
import { Child, processAlive, processTempDir } from "./helpers.ts";
import {
  checkColours,
  checkExact,
  checkSenderMeta,
  checkTimestamp,
  flat,
  H,
  numberOfTimestamp,
  publishFrames,
  type Received,
  receiveOne,
  texture,
  W,
} from "./network_frames.ts";

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
