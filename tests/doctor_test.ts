/**
 * `surfaceport doctor` on Linux: the command runs as a user runs it, its
 * text names every check, its JSON parses, and what it reports is real —
 * the facts are checked against what Linux does (seal bits, EPERM, l_pid -1
 * of an OFD lock, the child's own pid through SO_PEERCRED), and each probe,
 * handed a libc whose seals or locks do nothing, says "failed".
 */

import assert from "node:assert/strict";
import {
  type LinuxCalls,
  linuxChecks,
  probeMemfdSeals,
  probeOfdLocks,
  probeRegistry,
  probeStatx,
  realLinuxCalls,
} from "../cli/doctor_linux.ts";
import { runtimeCheck } from "../cli/doctor.ts";
import type { Check, DoctorReport } from "../cli/doctor_report.ts";
import { LINUX } from "../src/linux/structs.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const linux = Deno.build.os === "linux";
const FLAGS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env", "--allow-run"];

async function runDoctor(args: string[]): Promise<{ code: number; out: string; pid: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...FLAGS, MAIN, "doctor", ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  const output = await child.output();
  const err = new TextDecoder().decode(output.stderr);
  assert.equal(err, "", "doctor writes nothing to stderr when all is well");
  return { code: output.code, out: new TextDecoder().decode(output.stdout), pid: child.pid };
}

const byId = (checks: Check[], id: string) => {
  const check = checks.find((c) => c.id === id);
  assert.ok(check, `no ${id} in ${checks.map((c) => c.id)}`);
  return check;
};

Deno.test({
  name: "doctor: `cli doctor` prints one [ok] line per Linux check and exits 0",
  ignore: !linux,
  async fn() {
    const { code, out } = await runDoctor([]);
    assert.equal(code, 0, out);
    assert.match(out, /^surfaceport doctor: surfaceport \d+\.\d+\.\d+; deno \d/);
    for (
      const id of [
        "runtime.deno",
        "linux.memfd-seals",
        "linux.ofd-locks",
        "linux.statx",
        "linux.peercred-handoff",
        "linux.registry",
      ]
    ) {
      assert.match(out, new RegExp(`^\\[ok\\] +${id.replace(".", "\\.")} `, "m"), out);
    }
  },
});

Deno.test({
  name: "doctor: `cli doctor --json` parses and its facts are what Linux really does",
  ignore: !linux,
  async fn() {
    const { code, out, pid } = await runDoctor(["--json"]);
    assert.equal(code, 0, out);
    const report: DoctorReport = JSON.parse(out);
    assert.equal(report.runtime.os, "linux");
    assert.equal(report.runtime.deno, Deno.version.deno);
    assert.ok(report.checks.every((c) => c.status === "ok"), out);

    const seals = byId(report.checks, "linux.memfd-seals").facts!;
    const wanted = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL;
    assert.equal((seals.seals as number) & wanted, wanted);
    assert.deepEqual([seals.growErrno, seals.shrinkErrno, seals.sealAgainErrno], [1, 1, 1]); // EPERM

    const locks = byId(report.checks, "linux.ofd-locks").facts!;
    assert.deepEqual(locks.whileHeld, { type: LINUX.F_RDLCK, pid: -1 }); // -1: an OFD lock
    assert.equal((locks.afterClose as { type: number }).type, LINUX.F_UNLCK);

    const statx = byId(report.checks, "linux.statx").facts! as Record<string, { ino: number }>;
    assert.equal(statx.byFd.ino, statx.byPath.ino);

    const handoff = byId(report.checks, "linux.peercred-handoff").facts!;
    const seen = handoff.seen as Record<string, { pid: number }>;
    // SO_PEERCRED named the doctor process itself, as this test knows its pid.
    assert.equal(seen.byListener.pid, pid);
    assert.equal(seen.byClient.pid, pid);
    assert.deepEqual(
      [handoff.bytesOk, handoff.inUseBefore, handoff.inUseWhileOpen, handoff.inUseAfterClose],
      [true, false, true, false],
    );
  },
});

/** The real libc with one call replaced. */
function broken(replace: Partial<LinuxCalls>): LinuxCalls {
  return { ...realLinuxCalls(), ...replace };
}

Deno.test({
  name: "doctor: a probe handed seals or locks that do nothing, or a wrong statx, says failed",
  ignore: !linux,
  fn() {
    const real = realLinuxCalls();
    assert.equal(probeMemfdSeals(real).status, "ok");
    assert.equal(probeOfdLocks(real).status, "ok");
    assert.equal(probeStatx(real).status, "ok");

    // F_ADD_SEALS "succeeds" without sealing: growing then works, and the probe must see it.
    const noSeals = broken({
      fcntl: (fd, cmd, arg) => cmd === LINUX.F_ADD_SEALS ? 0 : real.fcntl(fd, cmd, arg),
    });
    const seals = probeMemfdSeals(noSeals);
    assert.equal(seals.status, "failed", JSON.stringify(seals));
    assert.match(seals.detail, /seals do not hold/);

    // F_OFD_SETLK "succeeds" without locking: nothing is seen through the other description.
    const noLocks = broken({
      fcntl_lock: (fd, cmd, lock) => cmd === LINUX.F_OFD_SETLK ? 0 : real.fcntl_lock(fd, cmd, lock),
    });
    const locks = probeOfdLocks(noLocks);
    assert.equal(locks.status, "failed", JSON.stringify(locks));
    assert.match(locks.detail, /SurfacePool could reuse/);

    // statx reporting another size.
    const wrongSize = broken({
      statx: (dirfd, path, flags, mask, buffer) => {
        const result = real.statx(dirfd, path, flags, mask, buffer);
        new DataView((buffer as Uint8Array).buffer).setBigUint64(40, 1n, true);
        return result;
      },
    });
    assert.equal(probeStatx(wrongSize).status, "failed");

    // A call that fails outright is a failed check, not a crash.
    const noMemfd = broken({ memfd_create: () => -1, errno: () => 38 });
    const failed = probeMemfdSeals(noMemfd);
    assert.equal(failed.status, "failed");
    assert.match(failed.detail, /memfd_create\(MFD_ALLOW_SEALING\) failed: errno 38/);
  },
});

Deno.test({
  name:
    "doctor: the registry check refuses what list() would ignore, and accepts an absent directory",
  ignore: !linux,
  fn() {
    const uid = 4_000_000_000 - (Deno.pid % 100_000); // a uid no one has: its own directory
    const path = `/tmp/surfaceport-${uid}`;
    try {
      assert.equal(probeRegistry(uid).status, "ok"); // absent
      Deno.writeTextFileSync(path, "");
      assert.equal(probeRegistry(uid).status, "failed"); // a file
      Deno.removeSync(path);
      Deno.mkdirSync(path, { mode: 0o700 });
      const owned = probeRegistry(uid); // ours by mode, but owned by another uid
      assert.equal(owned.status, "failed");
      assert.match(owned.detail, /not a private directory/);
    } finally {
      try {
        Deno.removeSync(path, { recursive: true });
      } catch {
        // already gone
      }
    }
    const self = probeRegistry();
    assert.ok(self.status === "ok", JSON.stringify(self));
  },
});

Deno.test("doctor: the runtime check compares with the minimum Deno", () => {
  assert.equal(runtimeCheck("2.7.6").status, "ok");
  assert.equal(runtimeCheck("2.7.5").status, "failed");
  assert.match(runtimeCheck("1.46.0").detail, /older than 2\.7\.6/);
});

Deno.test({
  name: "doctor: linuxChecks in this process agree with the child's",
  ignore: !linux,
  async fn() {
    const checks = await linuxChecks();
    assert.deepEqual(
      checks.map((c) => [c.id, c.status]),
      [
        ["linux.memfd-seals", "ok"],
        ["linux.ofd-locks", "ok"],
        ["linux.statx", "ok"],
        ["linux.peercred-handoff", "ok"],
        ["linux.registry", "ok"],
      ],
    );
  },
});

Deno.test({
  name: "doctor: the macOS peer entry (`doctor --peer`) on Linux exits 1 saying why",
  ignore: !linux,
  async fn() {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...FLAGS, MAIN, "doctor", "--peer", "surfaceport.x"],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(output.code, 1);
    assert.match(
      new TextDecoder().decode(output.stderr),
      /doctor peer: UnsupportedError: the IOSurface backend runs on macOS, not linux/,
    );
  },
});
