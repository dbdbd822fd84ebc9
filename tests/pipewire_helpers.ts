/**
 * A real PipeWire 1.4 daemon and WirePlumber for the PipeWire tests, started
 * in the Debian trixie chroot (headless, in a pid and mount namespace of
 * their own so that a kill takes both down), and what the tests share: the
 * CLI with the chroot's gst-launch-1.0, a test card painted and checked by
 * pixels, a PipeWire client in the chroot.
 *
 * @module
 */

import { publish, SurfacePool } from "../mod.ts";
import { GST, missingInChroot, within } from "./gst_helpers.ts";
import { Child, paintBGRA, removeDeadProcessesDirs, sleep } from "./helpers.ts";

/** The CLI's entry point. */
export const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
/** The CLI's permissions. */
export const FLAGS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env", "--allow-run"];
/** The test card's size. */
export const W = 64;
/** The test card's height. */
export const H = 48;
/** The daemons' XDG_RUNTIME_DIR, inside the chroot. */
export const RUNTIME = `/tmp/sp-pipewire-${Deno.pid}`;

/** A headless PipeWire + WirePlumber in the chroot; dispose kills both. */
export async function startPipeWire(): Promise<Child> {
  await Deno.mkdir(`${GST.root}${RUNTIME}`, { recursive: true, mode: 0o700 });
  const daemon = new Child("unshare", [
    "--fork",
    "--pid",
    "--kill-child",
    "--mount",
    "--propagation",
    "private",
    `--mount-proc=${GST.root}/proc`,
    "chroot",
    GST.root!,
    "/usr/bin/env",
    "-i",
    "PATH=/usr/bin:/bin",
    `XDG_RUNTIME_DIR=${RUNTIME}`,
    "HOME=/root",
    "sh",
    "-c",
    "pipewire & sleep 0.3; exec wireplumber",
  ]);
  // Ready when WirePlumber is a client of the daemon (it links the streams).
  for (let i = 0; i < 100; i++) {
    const out = await new Deno.Command("timeout", {
      args: [
        "3",
        "chroot",
        GST.root!,
        "/usr/bin/env",
        "-i",
        `XDG_RUNTIME_DIR=${RUNTIME}`,
        "pw-cli",
        "ls",
        "Client",
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (new TextDecoder().decode(out.stdout).includes("WirePlumber")) return daemon;
    await sleep(100);
  }
  const stderr = daemon.stderr;
  await daemon[Symbol.asyncDispose]();
  throw new Error(
    `PipeWire did not come up in 10 s: ${stderr.trim().split("\n").slice(-3).join(" | ")}`,
  );
}

/** Why the PipeWire tests cannot run here, or undefined. */
export async function whyNot(): Promise<string | undefined> {
  const missing = await missingInChroot(
    ["pipewiresrc", "pipewiresink", "videoconvert"],
    ["/usr/bin/pipewire", "/usr/bin/wireplumber", "/usr/bin/pw-cli"],
  );
  if (missing) return missing;
  try {
    await using _daemon = await startPipeWire();
  } catch (error) {
    return `the PipeWire daemon cannot run here: ${(error as Error).message}`;
  }
  return undefined;
}

// What test processes killed outright left (their daemons died with them: Child).
if (GST.root) removeDeadProcessesDirs(`${GST.root}/tmp`, "sp-pipewire-");
/** Why the PipeWire tests skip, or undefined. */
export const reason = GST.reason ?? await whyNot();
// The daemons' runtime directory lives in the chroot's /tmp: remove it when the tests end.
globalThis.addEventListener("unload", () => {
  if (!GST.root) return;
  try {
    Deno.removeSync(`${GST.root}${RUNTIME}`, { recursive: true });
  } catch (error) {
    // (another test process sharing the chroot removed it first)
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
});
if (reason) console.log(`PipeWire tests skipped: ${reason}`);
/** A prefix for the names of tests that skip. */
export const skip = reason ? `(skipped: ${reason}) ` : "";

/** `cli ARGS` with the chroot's gst-launch-1.0 and the test daemon. */
export function cli(args: string[]): Child {
  return new Child(Deno.execPath(), ["run", ...FLAGS, MAIN, ...args], {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    SURFACEPORT_GST_LAUNCH: `chroot ${GST.root} gst-launch-1.0`,
    XDG_RUNTIME_DIR: RUNTIME,
    SURFACEPORT_PIPEWIRE_SOCKET: `${GST.root}${RUNTIME}/pipewire-0`,
  });
}

/**
 * A PipeWire client in the chroot: gst-launch-1.0 ARGS. Quiet, or with
 * `verbose` its property notifications on stdout (`-v`): a `fakesink
 * silent=false` then prints a `last-message = chain` line per buffer.
 */
export function pwClient(args: string[], verbose = false): Child {
  return new Child("chroot", [
    GST.root!,
    "/usr/bin/env",
    "-i",
    "PATH=/usr/bin:/bin",
    `XDG_RUNTIME_DIR=${RUNTIME}`,
    "gst-launch-1.0",
    verbose ? "-v" : "-q",
    ...args,
  ]);
}

/** SIGTERM, then kill, and await `child`. */
export async function stop(child: Child): Promise<void> {
  try {
    child.process.kill("SIGTERM");
    await child.exit(8000);
  } catch {
    // killed below
  }
  await child[Symbol.asyncDispose]();
}

/** Quadrants red, green, blue, white, and a gradient row at the top, all exact. */
export function colour(n: number, x: number, y: number): [number, number, number] {
  if (y === 0) return [(x * 4) & 255, n & 255, 128];
  const q = (x < W / 2 ? 0 : 1) + (y < H / 2 ? 0 : 2);
  return ([[220, 30, 30], [30, 200, 40], [30, 40, 210], [235, 235, 235]] as const)[q] as [
    number,
    number,
    number,
  ];
}

/** Checks an RGBA or BGRA frame (rows `stride` apart) against {@link colour}. */
export function checkFrame(bytes: Uint8Array, stride: number, order: "RGBA" | "BGRA"): void {
  const n = bytes[1]; // frame number from the top row's green
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [r, g, b] = colour(n, x, y);
      const k = y * stride + x * 4;
      const got = order === "RGBA"
        ? [bytes[k], bytes[k + 1], bytes[k + 2]]
        : [bytes[k + 2], bytes[k + 1], bytes[k]];
      if (got[0] !== r || got[1] !== g || got[2] !== b) {
        throw new Error(`pixel (${x},${y}): got rgb ${got}, painted ${[r, g, b]}`);
      }
    }
  }
}

/** Publishes BGRA frames at ~30/s; resolves with the longest send() once stopped. */
export async function publishFrames(name: string, signal: AbortSignal): Promise<number> {
  using publisher = publish(name);
  using pool = new SurfacePool({ width: W, height: H, format: "BGRA", maxSurfaces: 8 });
  let longest = 0;
  for (let n = 0; !signal.aborted; n++) {
    {
      using surface = await pool.acquire({ timeout: 2000 });
      paintBGRA(surface, (x, y) => colour(n, x, y));
      const start = performance.now();
      await publisher.send(surface, { n });
      longest = Math.max(longest, performance.now() - start);
    }
    await sleep(33);
  }
  return longest;
}

/**
 * Frames a PipeWire consumer took from `node`, as raw RGBA written to a file
 * in the chroot. The node is provided again after each consumer leaves, so
 * a consumer may find it gone for a moment: up to 4 tries, each saying why.
 */
export async function pipeWireFrames(node: string, count: number): Promise<Uint8Array> {
  const file = `/tmp/sp-pw-${Deno.pid}-${node}.rgba`;
  const failures: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    await using consumer = pwClient([
      ...["pipewiresrc", `target-object=${node}`, `num-buffers=${count}`],
      "stream-properties=p,media.type=Video,media.category=Capture,media.role=Camera",
      ...["!", "videoconvert", "!", "video/x-raw,format=RGBA", "!", "filesink", `location=${file}`],
    ]);
    const status = await consumer.exit(8000).catch(() => undefined);
    if (status?.success) {
      const bytes = await Deno.readFile(`${GST.root}${file}`);
      await Deno.remove(`${GST.root}${file}`);
      return bytes;
    }
    failures.push(status ? consumer.stderr.trim().split("\n")[0] : "no frames in 8 s");
    await Deno.remove(`${GST.root}${file}`).catch(() => {});
    await sleep(500);
  }
  throw new Error(`the PipeWire consumer failed 4 times: ${failures.join(" | ")}`);
}

/** Frames `subscription` received in `ms` (a receive that waits past the end counts as none). */
export async function framesWithin(
  subscription: { receive(): Promise<Disposable> },
  ms: number,
): Promise<number> {
  const end = performance.now() + ms;
  let frames = 0;
  for (;;) {
    const left = end - performance.now();
    if (left <= 0) return frames;
    const frame = await within(subscription.receive(), left, "").catch(() => undefined);
    if (!frame) return frames;
    frame[Symbol.dispose]();
    frames++;
  }
}
