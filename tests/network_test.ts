/**
 * `cli send` / `cli receive` against real GStreamer 1.26 (the trixie chroot):
 * a test pattern crosses from one network namespace to another over a veth
 * pair (or 127.0.0.1 where namespaces cannot be made: printed), checked by
 * pixels — exactly in raw mode, within a tolerance through VP8 — and with
 * every 8th packet dropped by nftables in the receiving namespace, the
 * receiver keeps going and counts what it lost.
 *
 * @module
 */

import assert from "node:assert/strict";
import { publish, subscribe, SurfacePool, toRGBA } from "../mod.ts";
import { FrameGapCounter } from "../src/gst/network.ts";
import { GST, missingInChroot, within } from "./gst_helpers.ts";
import { Child, sleep } from "./helpers.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const FLAGS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env", "--allow-run"];

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

async function makeNet(): Promise<Net> {
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

const W = 64;
const H = 48;

/** Pixel (x, y) of frame n: every byte depends on the position and the frame. */
function pattern(n: number, x: number, y: number): [number, number, number] {
  return [(x * 4 + n) & 255, (y * 5 + n * 3) & 255, (x + y * 2 + 40) & 255];
}

/** Large flat blocks, for the compressed mode: quadrants red, green, blue, white. */
function blocks(x: number, y: number): [number, number, number] {
  const q = (x < W / 2 ? 0 : 1) + (y < H / 2 ? 0 : 2);
  return ([[220, 30, 30], [30, 200, 40], [30, 40, 210], [235, 235, 235]] as const)[q] as [
    number,
    number,
    number,
  ];
}

/** Publishes BGRA frames at ~30/s under a path name until the signal aborts. */
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
      const bytes = surface.bytes();
      const stride = surface.planes[0].bytesPerRow;
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const [r, g, b] = paint(n, x, y);
          const i = y * stride + x * 4;
          bytes[i] = b;
          bytes[i + 1] = g;
          bytes[i + 2] = r;
          bytes[i + 3] = 255;
        }
      }
      await publisher.send(surface, { n });
    }
    await sleep(33);
  }
}

const missing = await missingInChroot([
  "rtpvrawpay",
  "rtpvrawdepay",
  "rtpjitterbuffer",
  "vp8enc",
  "vp8dec",
  "rtpvp8pay",
  "rtpvp8depay",
]);
if (missing) console.log(`network tests skipped: ${missing}`);
const skip = missing ? `(skipped: ${missing}) ` : "";
const hasNft = !missing && await missingInChroot([], ["/usr/sbin/nft"]) === undefined;

Deno.test({
  name: `${skip}send / receive raw RTP: the pattern arrives exactly, format and size too`,
  ignore: !!missing,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const net = await makeNet();
    const dir = await Deno.makeTempDir({ prefix: "sp-net-" });
    const source = `${dir}/card.sock`;
    const target = `${dir}/out.sock`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(source, pattern, stopPublishing.signal);
    const port = 20000 + (Deno.pid % 20000);
    const receiver = cli(net.receiver, [
      "receive",
      `${net.bind}:${port}`,
      target,
      "--mode",
      "raw",
      "--format",
      "BGRA",
      "--size",
      `${W}x${H}`,
      "--interval",
      "300",
    ]);
    const sender = cli(net.sender, ["send", source, `${net.to}:${port}`, "--mode", "raw"]);
    try {
      const announced = await sender.line("receive with:", 20000);
      assert(announced.includes(`--format BGRA --size ${W}x${H}`), announced);
      using frames = await subscribe(target, { timeout: 20000, policy: "queue" });
      let exact = 0;
      for (let i = 0; i < 10; i++) {
        using frame = await within(frames.receive(), 10000, "a frame over the network");
        const surface = frame.surface;
        assert.deepEqual([surface.format, surface.width, surface.height], ["BGRA", W, H]);
        const bytes = surface.bytes();
        const stride = surface.planes[0].bytesPerRow;
        // Which frame is it? The first pixel's red says (n mod 256), its green agrees.
        const n = bytes[2];
        assert.deepEqual(bytes[1], (n * 3) & 255, "first pixel is not one the sender painted");
        for (let y = 0; y < H; y++) {
          for (let x = 0; x < W; x++) {
            const [r, g, b] = pattern(n, x, y);
            const k = y * stride + x * 4;
            if (bytes[k] !== b || bytes[k + 1] !== g || bytes[k + 2] !== r) {
              throw new Error(
                `pixel (${x},${y}) of frame ${n}: got ${bytes.slice(k, k + 3)}, sent ${[b, g, r]}`,
              );
            }
          }
        }
        exact++;
      }
      assert.deepEqual(exact, 10);
    } finally {
      await stop(sender);
      await stop(receiver);
      stopPublishing.abort();
      await publishing.catch(() => {});
      await net.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `${skip}send / receive VP8 with every 8th packet dropped: colours within 24 levels, the receiver survives and counts what it lost${
      hasNft ? "" : " (loss: skipped, no nft in the chroot)"
    }`,
  ignore: !!missing,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const net = await makeNet();
    const dir = await Deno.makeTempDir({ prefix: "sp-net-" });
    const source = `${dir}/card.sock`;
    const target = `${dir}/out.sock`;
    const stopPublishing = new AbortController();
    const publishing = publishFrames(source, (_n, x, y) => blocks(x, y), stopPublishing.signal);
    const port = 20001 + (Deno.pid % 20000);
    const receiver = cli(net.receiver, [
      "receive",
      `${net.bind}:${port}`,
      target,
      "--mode",
      "vp8",
      "--format",
      "RGBA",
      "--interval",
      "300",
    ]);
    const sender = cli(net.sender, [
      "send",
      source,
      `${net.to}:${port}`,
      "--mode",
      "vp8",
      "--bitrate",
      "2000",
    ]);
    const nft = (args: string[]) =>
      run("ip", ["netns", "exec", net.receiverNs!, "chroot", GST.root!, "nft", ...args]);
    try {
      using frames = await subscribe(target, { timeout: 20000 });
      const checkColours = async () => {
        using frame = await within(frames.receive(), 10000, "a VP8 frame");
        assert.deepEqual([frame.surface.format, frame.surface.width, frame.surface.height], [
          "RGBA",
          W,
          H,
        ]);
        const rgba = toRGBA(frame.surface);
        let worst = 0;
        // Block interiors only: VP8 blurs the edges between blocks.
        for (
          const [cx, cy] of [[W / 4, H / 4], [(3 * W) / 4, H / 4], [W / 4, (3 * H) / 4], [
            (3 * W) / 4,
            (3 * H) / 4,
          ]]
        ) {
          for (let y = cy - 4; y < cy + 4; y++) {
            for (let x = cx - 4; x < cx + 4; x++) {
              const want = blocks(x, y);
              for (let c = 0; c < 3; c++) {
                worst = Math.max(worst, Math.abs(rgba[(y * W + x) * 4 + c] - want[c]));
              }
            }
          }
        }
        assert(worst <= 24, `a colour is off by ${worst} levels (tolerance 24)`);
      };
      await checkColours();
      if (!net.receiverNs || !hasNft) {
        console.log("packet loss not injected: needs the two namespaces and nft in the chroot");
        return;
      }
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
          "8",
          "0",
          "counter",
          "drop",
        ],
      ];
      for (const rule of rules) {
        const result = await nft(rule);
        assert(result.ok, `nft ${rule.join(" ")}: ${result.text}`);
      }
      // Under loss: the receiver keeps running and its counters say frames were lost.
      const lossy = await receiver.line(/lost [1-9]/, 20000);
      const listed = await nft(["list", "table", "inet", "sploss"]);
      const dropped = Number(/packets (\d+)/.exec(listed.text)?.[1] ?? 0);
      assert(dropped > 0, `nft dropped nothing: ${listed.text}`);
      console.log(`under loss (${dropped} packets dropped by nft): ${lossy.trim()}`);
      await nft(["delete", "table", "inet", "sploss"]);
      // And recovers: good frames again once the loss stops (a keyframe at least every 15).
      await sleep(1500);
      await checkColours();
    } finally {
      await stop(sender);
      await stop(receiver);
      stopPublishing.abort();
      await publishing.catch(() => {});
      await net.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
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
