/**
 * The command line's {@link GstLauncher}: runs `gst-launch-1.0` as a child
 * process. `SURFACEPORT_GST_LAUNCH` replaces the command (split on spaces),
 * e.g. `chroot /var/cache/surfaceport-gst/trixie gst-launch-1.0` for the
 * Debian trixie chroot that `scripts/gst-chroot.sh` builds; extra
 * environment for it (e.g. `XDG_RUNTIME_DIR` of a PipeWire daemon) is taken
 * from the variables listed in `SURFACEPORT_GST_ENV` (comma-separated).
 *
 * @module
 */

import type { GstLauncher, GstProcess } from "../src/gst/launcher.ts";

/** The command (and leading arguments) that runs `gst-launch-1.0`. */
export function gstLaunchCommand(): string[] {
  const custom = Deno.env.get("SURFACEPORT_GST_LAUNCH")?.trim();
  return custom ? custom.split(/\s+/) : ["gst-launch-1.0"];
}

function gstEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
  };
  for (const name of (Deno.env.get("SURFACEPORT_GST_ENV") ?? "").split(",")) {
    const value = name ? Deno.env.get(name.trim()) : undefined;
    if (value !== undefined) env[name.trim()] = value;
  }
  for (const name of ["XDG_RUNTIME_DIR", "PIPEWIRE_REMOTE", "GST_DEBUG"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  // Errors only, uncoloured: the bridges read the cause of a failure from them (e.g. unixfdsink's
  // "Expecting buffers with FD memories" when PipeWire hands mapped memory).
  env.GST_DEBUG ??= "*:1";
  env.GST_DEBUG_NO_COLOR = "1";
  return env;
}

/**
 * util-linux's `setpriv`, if this machine has it: `setpriv --pdeathsig KILL` execs the command
 * (the pid stays the child's) with a parent-death signal.
 */
function findSetpriv(): string | undefined {
  if (Deno.build.os !== "linux") return undefined;
  for (const path of ["/usr/bin/setpriv", "/bin/setpriv"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there (or no --allow-read for it): the command runs without a parent-death signal
    }
  }
  return undefined;
}

let setpriv: string | undefined | null = null;

/**
 * The program and arguments that run `command ARGS` killed with this process, where `setpriv`
 * exists: a process killed outright (SIGKILL, a crash: no `stop()` runs) takes it along instead of
 * leaving it running (a pipeline serving a dead socket, a PipeWire node that stays listed).
 * Otherwise `command ARGS` as they are.
 */
export function killedWithParent(command: string, args: string[]): [string, string[]] {
  if (setpriv === null) setpriv = findSetpriv();
  return setpriv ? [setpriv, ["--pdeathsig", "KILL", command, ...args]] : [command, args];
}

/** Starts `gst-launch-1.0 -q ARGS`, keeping the last 4 KiB of its stderr for messages. */
export const denoGstLauncher: GstLauncher = (args: readonly string[]): GstProcess => {
  const [command, ...prefix] = gstLaunchCommand();
  const [file, argv] = killedWithParent(command, [...prefix, "-q", ...args]);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(file, {
      args: argv,
      env: gstEnv(),
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    // Not installed, or no --allow-run: a process that failed at once, saying why.
    const text = `ERROR: cannot run ${command}: ${(error as Error).message}`;
    return { exited: Promise.resolve(-1), errorText: () => text, stop: () => Promise.resolve() };
  }
  let errorText = "";
  const decoder = new TextDecoder();
  const pump = (async () => {
    try {
      for await (const chunk of child.stderr) {
        errorText = (errorText + decoder.decode(chunk, { stream: true })).slice(-4096);
      }
    } catch {
      // The pipe closed under us: the process is gone.
    }
  })();
  const exited = child.status.then((status) => status.code, () => -1);
  let stopping: Promise<void> | undefined;
  const process: GstProcess = {
    exited,
    errorText: () => errorText,
    stop() {
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // Already exited.
          }
        }, 2000);
        await exited;
        clearTimeout(timer);
        await pump;
      })();
      return stopping;
    },
  };
  return process;
};
