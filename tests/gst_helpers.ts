/**
 * Real GStreamer 1.26 for the bridge tests: the Debian trixie chroot built
 * (once, cached) by `scripts/gst-chroot.sh`, and `gst-launch-1.0` run in it
 * with chroot(8), always killed and awaited.
 *
 * @module
 */

import { Child } from "./helpers.ts";

const SCRIPT = new URL("../scripts/gst-chroot.sh", import.meta.url).pathname;

/** Where the chroot is, or why the GStreamer tests cannot run here. */
export type GstChroot = { root: string; reason?: undefined } | { root?: undefined; reason: string };

async function findChroot(): Promise<GstChroot> {
  if (Deno.build.os !== "linux") return { reason: "GStreamer bridge tests run on Linux only" };
  try {
    // Cached: returns at once once built. .ci/run builds it before the tests.
    const out = await new Deno.Command(SCRIPT, { stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder();
    if (!out.success) {
      return {
        reason: `scripts/gst-chroot.sh failed: ${
          text.decode(out.stderr).trim().split("\n").at(-1)
        }`,
      };
    }
    return { root: text.decode(out.stdout).trim().split("\n").at(-1)! };
  } catch (error) {
    return { reason: `could not run scripts/gst-chroot.sh: ${(error as Error).message}` };
  }
}

/** The chroot, found once per test process; prints why GStreamer tests skip when it is missing. */
export const GST: GstChroot = await findChroot();
if (GST.reason) console.log(`GStreamer tests skipped: ${GST.reason}`);

/** Runs `gst-launch-1.0 -q ARGS` in the chroot (a {@link Child}: dispose to kill and await it). */
export function gstLaunch(args: string[]): Child {
  if (!GST.root) throw new Error(`no GStreamer chroot: ${GST.reason}`);
  return new Child("chroot", [GST.root, "gst-launch-1.0", "-q", ...args], {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    GST_DEBUG: "1",
    HOME: "/root",
  });
}

/**
 * A live 64x64 BGRA test source (black) that serves `buffers` buffers at
 * `fps` on the abstract unixfdsink socket `socket`, waiting for its client:
 * a camera, for the from-gst allocation tests (a park per frame).
 */
export function liveUnixFdSource(socket: string, buffers: number, fps: number): Child {
  return gstLaunch([
    "videotestsrc",
    `num-buffers=${buffers}`,
    "pattern=black",
    "is-live=true",
    "!",
    `video/x-raw,format=BGRA,width=64,height=64,framerate=${fps}/1`,
    "!",
    "unixfdsink",
    `socket-path=${socket}`,
    "socket-type=abstract",
    "wait-for-connection=true",
    "sync=false",
  ]);
}

/**
 * Bind-mounts the host's `dir` over the same path in the chroot (so path
 * sockets and files are shared) for the duration of `fn`, unmounting after.
 */
export async function withBindMount<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  if (!GST.root) throw new Error(`no GStreamer chroot: ${GST.reason}`);
  const target = `${GST.root}${dir}`;
  await Deno.mkdir(target, { recursive: true });
  const mount = await new Deno.Command("mount", { args: ["--bind", dir, target], stderr: "piped" })
    .output();
  if (!mount.success) {
    throw new Error(`mount --bind ${dir}: ${new TextDecoder().decode(mount.stderr)}`);
  }
  try {
    return await fn();
  } finally {
    await new Deno.Command("umount", { args: ["-l", target] }).output();
  }
}

/** A host path whose file the chroot's gst-launch writes under its `/tmp` (no mount needed). */
export function chrootTmp(name: string): { inside: string; outside: string } {
  return { inside: `/tmp/${name}`, outside: `${GST.root}/tmp/${name}` };
}

/** Waits for `promise` at most `ms`, else rejects naming `what`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why tests needing these GStreamer `elements` (and, optionally, chroot
 * `programs`) cannot run here, or undefined when all are in the chroot.
 * `scripts/gst-chroot.sh` installs them as its "extras".
 */
export async function missingInChroot(
  elements: string[],
  programs: string[] = [],
): Promise<string | undefined> {
  if (!GST.root) return GST.reason;
  for (const program of programs) {
    const found = await Deno.stat(`${GST.root}${program}`).then(() => true, () => false);
    if (!found) return `${program} is not in the chroot (scripts/gst-chroot.sh extras failed?)`;
  }
  for (const element of elements) {
    const out = await new Deno.Command("chroot", {
      args: [GST.root, "gst-inspect-1.0", "--exists", element],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) {
      return `GStreamer element ${element} is not in the chroot (scripts/gst-chroot.sh extras failed?)`;
    }
  }
  return undefined;
}
