/**
 * `surfaceport doctor`: checks this machine and prints a report to paste
 * into an issue. On Linux: the kernel features the memfd backend needs,
 * each probed for real, and a handoff through the library. On macOS: which
 * shim was loaded from where (and its hash), its ABI report against the
 * tables, a bootstrap round trip and an IOSurface handoff with a child
 * process, and each assumption `docs/macos.md` says only a Mac can confirm,
 * marked confirmed / refuted / not-run.
 *
 * @module
 */

import meta from "../deno.json" with { type: "json" };
import { type Command, parseCommandArgs, UsageError } from "./command.ts";
import { isVersionAtLeast, MINIMUM_DENO_VERSION } from "../src/core/version.ts";
import { type Check, type DoctorReport, formatReport, healthy } from "./doctor_report.ts";

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/** Versions, OS, architecture and kernel, as far as the permissions let us see. */
export function runtimeFacts(): Record<string, string> {
  const facts: Record<string, string> = {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    os: Deno.build.os,
    arch: Deno.build.arch,
    target: Deno.build.target,
  };
  facts.kernel = granted({ name: "sys", kind: "osRelease" })
    ? Deno.osRelease()
    : "unknown (no --allow-sys=osRelease)";
  if (Deno.build.os === "darwin") {
    const plist = "/System/Library/CoreServices/SystemVersion.plist";
    if (granted({ name: "read", path: plist })) {
      const text = Deno.readTextFileSync(plist);
      const version = /<key>ProductVersion<\/key>\s*<string>([^<]+)<\/string>/.exec(text);
      if (version) facts.macos = version[1];
    }
  }
  return facts;
}

/** The runtime's version against the oldest surfaceport runs on. */
export function runtimeCheck(version: string = Deno.version.deno): Check {
  const ok = isVersionAtLeast(version, MINIMUM_DENO_VERSION);
  return {
    id: "runtime.deno",
    status: ok ? "ok" : "failed",
    detail: ok
      ? `deno ${version} (>= ${MINIMUM_DENO_VERSION})`
      : `deno ${version} is older than ${MINIMUM_DENO_VERSION}: upgrade (deno upgrade)`,
  };
}

/** Runs every check for this platform and returns the report. */
export async function doctorReport(): Promise<DoctorReport> {
  const checks = Deno.build.os === "darwin"
    ? await (await import("./doctor_darwin.ts")).darwinChecksOnThisMac()
    : await (await import("./doctor_linux.ts")).linuxChecks();
  return {
    surfaceport: meta.version,
    runtime: runtimeFacts(),
    checks: [runtimeCheck(), ...checks],
  };
}

/** `doctor [--json]`. */
export const doctor: Command = {
  summary: "check this machine and print a report to paste into an issue",
  usage: [
    "usage: surfaceport doctor [--json]",
    "",
    "Checks what surfaceport needs on this machine and prints one line per check:",
    "[ok] / [failed] for what surfaceport needs, [confirmed] / [refuted] for an",
    "assumption the macOS backend was written on (docs/macos.md), [not-run] with why.",
    "Exits 1 if anything failed or was refuted. Paste the report into an issue.",
    "  --json   the report as one JSON object",
  ].join("\n"),
  async run(args, io) {
    const { values, positionals } = parseCommandArgs(args, { json: "boolean", peer: "string" });
    if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
    if (typeof values.peer === "string") {
      // The child side of the macOS checks (started by doctor itself).
      return await (await import("./doctor_darwin_peer.ts")).runPeerProcess(values.peer);
    }
    const report = await doctorReport();
    await io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    return healthy(report) ? 0 : 1;
  },
};
