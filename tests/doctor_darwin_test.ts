/**
 * `surfaceport doctor`'s macOS half, run on Linux over the test double
 * (`tests/fakes/`): two fake tasks (the doctor and its peer) over one fake
 * kernel. Every assumption comes out confirmed against the double's model
 * (which is what a Mac must confirm), nothing is leaked, and each probe says
 * "refuted" when the double is made to behave otherwise — so on a Mac a
 * difference shows.
 */

import assert from "node:assert/strict";
import { darwinChecks, shimChecks } from "../cli/doctor_darwin.ts";
import {
  portSetPeekCheck,
  queueLimitSetCheck,
  sendPossibleCheck,
} from "../cli/doctor_darwin_ports.ts";
import { runDoctorPeer } from "../cli/doctor_darwin_peer.ts";
import type { PeerLauncher } from "../cli/doctor_mach.ts";
import { probeHandoff } from "../cli/doctor_handoff.ts";
import { type Check, formatReport } from "../cli/doctor_report.ts";
import { createDarwinBackend } from "../src/darwin/backend.ts";
import { setBackendForTesting } from "../src/platform.ts";
import { ABI_REPORT_VERSION, EXPECTED_ABI } from "../src/darwin/abi.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { FakeMachKernel, type FakeTask } from "./fakes/fake_darwin.ts";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The doctor task and a launcher that starts the peer as a second task (`reportedPid` to lie). */
function setup(reportedPid?: number, patchPeer?: (task: FakeTask) => void) {
  const kernel = new FakeMachKernel();
  const doctor = kernel.createTask({ pid: 101, uid: 501, gid: 20 });
  const peers: FakeTask[] = [];
  const launch: PeerLauncher = (service) => {
    const task = kernel.createTask({ pid: 202, uid: 501, gid: 20 });
    patchPeer?.(task);
    peers.push(task);
    let killed = false;
    const exited = runDoctorPeer(task, service, sleep).catch((error) => {
      if (!killed) throw error; // a killed peer's last receive fails: that is the point
    });
    return {
      pid: reportedPid ?? 202,
      kill() {
        killed = true;
        kernel.kill(task);
      },
      exited,
    };
  };
  return { kernel, doctor, peers, launch };
}

const status = (checks: Check[]) => Object.fromEntries(checks.map((c) => [c.id, c.status]));

Deno.test("doctor/macOS over the test double: every check runs, every assumption is confirmed, nothing leaks", async () => {
  const { kernel, doctor, launch, peers } = setup();
  const checks = [
    ...shimChecks(undefined, { version: ABI_REPORT_VERSION, ...EXPECTED_ABI }),
    ...await darwinChecks(doctor, launch, sleep),
  ];
  assert.deepEqual(status(checks), {
    "macos.shim": "not-run",
    "macos.abi": "ok",
    "macos.align.BGRA": "confirmed",
    "macos.align.RGBA": "confirmed",
    "macos.align.L008": "confirmed",
    "macos.align.420v": "confirmed",
    "macos.align.420f": "confirmed",
    "macos.align.y420": "confirmed",
    "macos.qlimit": "confirmed",
    "macos.send-timeout.pseudo-receive": "confirmed",
    "macos.qlimit.set": "confirmed",
    "macos.send-possible": "confirmed",
    "macos.portset.peek": "confirmed",
    "macos.portset.destroy": "confirmed",
    "macos.bootstrap.removal": "confirmed",
    "macos.cvpixelbuffer.use": "confirmed",
    "macos.bootstrap.roundtrip": "ok",
    "macos.audit-trailer": "confirmed",
    "macos.bootstrap.taken": "confirmed",
    "macos.inuse.port": "confirmed",
    "macos.inuse.queued": "confirmed",
    "macos.inuse.lookup": "confirmed",
    "macos.inuse.lookup-ref": "confirmed",
    "macos.inuse.release": "confirmed",
    "macos.nosenders.kill": "confirmed",
  }, formatReport({ surfaceport: "test", runtime: {}, checks }));
  assert.equal(peers.length, 1);
  assert.equal(peers[0].alive, false, "the peer was killed by the no-senders check");
  kernel.assertNoLeaks();
  const text = formatReport({ surfaceport: "0.1.0", runtime: { os: "darwin" }, checks });
  assert.match(text, /^\[confirmed\] +macos\.audit-trailer +audit token \[/m);
  assert.match(text, /^\[ok\] +macos\.abi +every size, offset and constant/m);
});

Deno.test("doctor/macOS over the test double: a double that behaves otherwise is refuted, and still nothing leaks", async () => {
  // launchd slower than listen's retry window; a peer whose trailer names another pid.
  const slow = setup(999);
  slow.kernel.bootstrapRemovalDelayMs = 400;
  const checks = await darwinChecks(slow.doctor, slow.launch, sleep);
  const s = status(checks);
  assert.equal(s["macos.bootstrap.removal"], "refuted");
  assert.equal(s["macos.audit-trailer"], "refuted");
  const removal = checks.find((c) => c.id === "macos.bootstrap.removal")!;
  assert.ok((removal.facts!.freedAfterMs as number) >= 400);
  slow.kernel.assertNoLeaks();

  // IOSurfaceAlignProperty that does not align: IOSurface realigns, the layout differs.
  const unaligned = setup();
  unaligned.doctor.IOSurfaceAlignProperty = (_key, value) => value;
  const align = await darwinChecks(unaligned.doctor, unaligned.launch, sleep);
  assert.equal(status(align)["macos.align.BGRA"], "refuted");
  unaligned.kernel.assertNoLeaks();

  // A port-set peek that finds nothing: refuted (the member's message is still received).
  const deaf = setup();
  deaf.doctor.mach_msg_wait = () => Promise.resolve(DARWIN.MACH_RCV_TIMED_OUT);
  const peek = await portSetPeekCheck(deaf.doctor);
  assert.equal(peek.status, "refuted", peek.detail);
  deaf.kernel.assertNoLeaks();

  // Queue limits that are not applied, a send-possible request that is never armed: refuted.
  const stuck = setup();
  stuck.doctor.mach_port_set_attributes = () => DARWIN.KERN_SUCCESS;
  stuck.doctor.mach_port_request_notification = () => DARWIN.KERN_SUCCESS;
  assert.equal(queueLimitSetCheck(stuck.doctor).status, "refuted");
  const possible = await sendPossibleCheck(stuck.doctor, sleep);
  assert.equal(possible.status, "refuted", possible.detail);
  assert.match(possible.detail, /no notification/);
  stuck.kernel.assertNoLeaks();

  // Another process checking a live name in is told NAME_IN_USE, not NOT_PRIVILEGED: refuted.
  const other = setup(undefined, (task) => {
    task.bootstrap_check_in = () => DARWIN.BOOTSTRAP_NAME_IN_USE;
  });
  assert.equal(
    status(await darwinChecks(other.doctor, other.launch, sleep))["macos.bootstrap.taken"],
    "refuted",
  );
  other.kernel.assertNoLeaks();

  // A use count that never shows: every use-count assumption is refuted.
  const blind = setup();
  blind.doctor.IOSurfaceIsInUse = () => false;
  const uses = status(await darwinChecks(blind.doctor, blind.launch, sleep));
  assert.equal(uses["macos.inuse.port"], "refuted");
  assert.equal(uses["macos.inuse.queued"], "refuted");
  assert.equal(uses["macos.inuse.lookup"], "refuted");
  assert.equal(uses["macos.cvpixelbuffer.use"], "refuted");
  blind.kernel.assertNoLeaks();
});

Deno.test("doctor/macOS over the test double: a peer that cannot start fails the round trip and skips what needs it", async () => {
  const { kernel, doctor } = setup();
  const checks = await darwinChecks(doctor, () => {
    throw new Deno.errors.NotCapable("Requires run access");
  }, sleep);
  const s = status(checks);
  assert.equal(s["macos.bootstrap.roundtrip"], "failed");
  assert.match(
    checks.find((c) => c.id === "macos.bootstrap.roundtrip")!.detail,
    /could not start the peer process.*--allow-run/,
  );
  assert.equal(s["macos.nosenders.kill"], "not-run");
  assert.equal(s["macos.qlimit"], "confirmed", "the checks without a peer still run");
  kernel.assertNoLeaks();
});

Deno.test("doctor/macOS: the ABI check lists each difference of a bad report", () => {
  const bad = { version: ABI_REPORT_VERSION, ...EXPECTED_ABI, "sizeof(mach_msg_header_t)": 32 };
  const [, abi] = shimChecks(undefined, bad);
  assert.equal(abi.status, "failed");
  assert.match(abi.detail, /sizeof\(mach_msg_header_t\)/);
});

Deno.test("doctor/macOS over the test double: the library's own handoff (macos.handoff) is ok, and nothing leaks", async () => {
  const kernel = new FakeMachKernel();
  const task = kernel.createTask({ pid: 101, uid: 501, gid: 20 });
  setBackendForTesting(createDarwinBackend(task));
  try {
    const check = await probeHandoff("macos.handoff", 101);
    assert.equal(check.status, "ok", check.detail);
    // The same probe with another pid than the peer credentials show: failed.
    assert.equal((await probeHandoff("macos.handoff", 102)).status, "failed");
  } finally {
    setBackendForTesting(undefined);
  }
  kernel.assertNoLeaks();
});
