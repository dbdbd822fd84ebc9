/**
 * What `bench/network.ts` makes outside its own process — two network
 * namespaces joined by a veth pair, a PipeWire daemon with WirePlumber in
 * the GStreamer chroot, the tests' native memfd producer in that chroot —
 * and its removal however the run ends: each `finally` removes what it made,
 * a signal removes whatever is left ({@link onSignal}), and the next run
 * removes what a SIGKILL left ({@link removeStale}). The processes
 * themselves die with the bench ({@link killedWithParent}).
 *
 * @module
 */

import { killedWithParent } from "../cli/gst_launch.ts";

/** The GStreamer chroot (`scripts/gst-chroot.sh`), with PipeWire and the encoders. */
export const CHROOT = "/var/cache/surfaceport-gst/trixie";
const FIXTURE = new URL("../tests/fixtures/pipewire_memfd_producer.ts", import.meta.url).pathname;

/** The standard output of `cmd ARGS` (whatever its exit status). */
export async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

/**
 * What this run made outside its processes (directories in the chroot's /tmp,
 * network namespaces), each with its synchronous removal: the `finally` that
 * made it removes it, and SIGINT or SIGTERM (no `finally` runs then) removes
 * whatever is left. The processes themselves die with this one
 * ({@link killedWithParent}).
 */
const made = new Set<() => void>();

/** Records `remove` until the returned function runs it (once). */
export function undoable(remove: () => void): () => void {
  made.add(remove);
  return () => {
    if (!made.delete(remove)) return;
    try {
      remove();
    } catch { /* already gone */ }
  };
}

/** Removes everything still listed in {@link made}, newest first. */
export function removeMade(): void {
  for (const remove of [...made].reverse()) {
    made.delete(remove);
    try {
      remove();
    } catch { /* already gone */ }
  }
}

/** SIGINT and SIGTERM: removes what this run made (no `finally` runs then) and exits 130. */
export function onSignal(): void {
  removeMade();
  Deno.exit(130);
}

/** `command ARGS`, killed with this process (no bench daemon outlives a killed bench). */
export function command(file: string, args: string[], options: Deno.CommandOptions): Deno.Command {
  const [program, argv] = killedWithParent(file, args);
  return new Deno.Command(program, { ...options, args: argv });
}

/**
 * Runs `fn` with a PipeWire daemon and WirePlumber in the chroot (in a pid
 * namespace of their own), given their XDG_RUNTIME_DIR inside the chroot.
 * However `fn` ends, both are killed and awaited and the runtime directory
 * is removed from the chroot's /tmp.
 */
export async function withPipeWire<T>(fn: (runtime: string) => Promise<T>): Promise<T> {
  const runtime = `/tmp/sp-bench-pw-${Deno.pid}`;
  const removeRuntime = undoable(() => Deno.removeSync(`${CHROOT}${runtime}`, { recursive: true }));
  let daemon: Deno.ChildProcess | undefined;
  try {
    await Deno.mkdir(`${CHROOT}${runtime}`, { recursive: true, mode: 0o700 });
    daemon = command("unshare", [
      "--fork",
      "--pid",
      "--kill-child",
      "--mount",
      "--propagation",
      "private",
      `--mount-proc=${CHROOT}/proc`,
      "chroot",
      CHROOT,
      "/usr/bin/env",
      "-i",
      "PATH=/usr/bin:/bin",
      `XDG_RUNTIME_DIR=${runtime}`,
      "HOME=/root",
      "sh",
      "-c",
      "pipewire & sleep 0.3; exec wireplumber",
    ], { stdout: "null", stderr: "null" }).spawn();
    await new Promise((r) => setTimeout(r, 2000));
    return await fn(runtime);
  } finally {
    if (daemon) {
      try {
        daemon.kill("SIGKILL"); // unshare --kill-child takes the namespace's processes along
      } catch { /* gone */ }
      await daemon.status;
    }
    removeRuntime();
  }
}

/**
 * The native memfd producer of the tests (tests/fixtures), in the chroot at
 * `width`×`height`, recording when it queued each frame (by its number mod 256, painted
 * in the top row's green byte) into `sent`, on this process's clock.
 */
export async function startMemfdProducer(
  runtime: string,
  node: string,
  width: number,
  height: number,
  sent: Map<number, number>,
): Promise<Deno.ChildProcess> {
  const dir = `/tmp/sp-bench-deno-${Deno.pid}`;
  const removeDir = undoable(() => Deno.removeSync(`${CHROOT}${dir}`, { recursive: true }));
  let child: Deno.ChildProcess;
  try {
    await Deno.mkdir(`${CHROOT}${dir}/cache`, { recursive: true });
    await Deno.link(Deno.execPath(), `${CHROOT}${dir}/deno`).catch(() =>
      Deno.copyFile(Deno.execPath(), `${CHROOT}${dir}/deno`)
    );
    await Deno.copyFile(FIXTURE, `${CHROOT}${dir}/producer.ts`);
    child = command("chroot", [
      CHROOT,
      ...["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp"],
      ...[`XDG_RUNTIME_DIR=${runtime}`, `DENO_DIR=${dir}/cache`],
      ...[
        `${dir}/deno`,
        "run",
        "--allow-ffi",
        `${dir}/producer.ts`,
        node,
        String(width),
        String(height),
      ],
    ], { stdout: "piped", stderr: "null" }).spawn();
  } catch (error) {
    removeDir();
    throw error;
  }
  // Removed once the producer's stdout ends (it exited), or by the run's last cleanup.
  (async () => {
    let text = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      let i;
      while ((i = text.indexOf("\n")) >= 0) {
        const words = text.slice(0, i).split(" ");
        text = text.slice(i + 1);
        if (words[0] === "queued") {
          sent.set(Number(words[2]) & 255, Number(words[3]) - performance.timeOrigin);
        }
      }
    }
  })().finally(removeDir);
  return child;
}

/**
 * Runs `fn` with two network namespaces joined by a veth pair (10.232.0.1 in
 * the first, 10.232.0.2 in the second), given the command prefixes that run
 * in each and the first's veth device. However `fn` ends, every process left
 * in them is killed and both are deleted.
 */
export async function withNet<T>(
  fn: (a: string[], b: string[], dev: string) => Promise<T>,
): Promise<T> {
  const a = `spbA${Deno.pid}`;
  const b = `spbB${Deno.pid}`;
  const va = `vba${Deno.pid}`;
  const removeNamespaces = undoable(() => {
    for (const ns of [a, b]) {
      new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
        .outputSync();
    }
  });
  try {
    await run("ip", ["netns", "add", a]);
    await run("ip", ["netns", "add", b]);
    await run("ip", [
      "link",
      "add",
      va,
      "netns",
      a,
      "type",
      "veth",
      "peer",
      "name",
      `vbb${Deno.pid}`,
      "netns",
      b,
    ]);
    await run("ip", ["-n", a, "addr", "add", "10.232.0.1/24", "dev", va]);
    await run("ip", ["-n", b, "addr", "add", "10.232.0.2/24", "dev", `vbb${Deno.pid}`]);
    for (const [ns, dev] of [[a, va], [b, `vbb${Deno.pid}`], [a, "lo"], [b, "lo"]]) {
      await run("ip", ["-n", ns, "link", "set", dev, "up"]);
    }
    return await fn(["ip", "netns", "exec", a], ["ip", "netns", "exec", b], va);
  } finally {
    for (const ns of [a, b]) {
      for (const pid of (await run("ip", ["netns", "pids", ns])).split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* gone */ }
      }
    }
    removeNamespaces();
  }
}

/** True if process `pid` is gone (not this one, not alive; a pid taken again counts as alive). */
function gone(pid: string): boolean {
  if (pid === String(Deno.pid)) return false;
  try {
    Deno.statSync(`/proc/${pid}`);
    return false;
  } catch {
    return true;
  }
}

/**
 * Removes what an earlier run killed outright (SIGKILL: none of its cleanup
 * ran) left: this bench's directories in the chroot's /tmp and its network
 * namespaces, named after a process that is gone.
 */
export function removeStale(): void {
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(`${CHROOT}/tmp`)];
  } catch {
    // no chroot: the PipeWire modes say so
  }
  for (const { name } of entries) {
    const pid = /^sp-bench-(?:pw|deno)-(\d+)$/.exec(name)?.[1];
    if (pid !== undefined && gone(pid)) {
      Deno.removeSync(`${CHROOT}/tmp/${name}`, { recursive: true });
    }
  }
  let namespaces = "";
  try {
    const listed = new Deno.Command("ip", { args: ["netns", "list"], stderr: "null" }).outputSync();
    namespaces = new TextDecoder().decode(listed.stdout);
  } catch {
    // no ip(8): the network modes say so
  }
  for (const [, name, pid] of namespaces.matchAll(/^(spb[AB](\d+))\b/gm)) {
    if (gone(pid)) {
      new Deno.Command("ip", { args: ["netns", "del", name], stdout: "null", stderr: "null" })
        .outputSync();
    }
  }
}
