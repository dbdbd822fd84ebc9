/**
 * The macOS checks of `surfaceport doctor` that need a second process: the
 * peer (`doctor --peer SERVICE`, or a second task of the test double) looks
 * the doctor's bootstrap name up and does what each message asks.
 *
 * @module
 */

import type { PointerValue } from "../ffi/runtime.ts";
import { serviceName } from "../src/darwin/bootstrap.ts";
import { type DarwinNative, realDarwinNative } from "../src/darwin/native.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { type Check, errorText } from "./doctor_report.ts";
import {
  allocate,
  checkIn,
  createSurface,
  delay,
  destroyReceive,
  DOCTOR_MSG,
  firstByte,
  hex,
  lookUp,
  type PeerHandle,
  type PeerLauncher,
  receive,
  send,
  sendOrThrow,
  type Sleep,
} from "./doctor_mach.ts";

const PEER_TIMEOUT_MS = 10_000;

// --- the peer --------------------------------------------------------------------------------

/**
 * The peer's side: looks `service` up, says hello with a reply port, then
 * does what each message asks (look a surface up, drop its port, release
 * it, hold a right) and acknowledges, until EXIT (or until it is killed).
 */
export async function runDoctorPeer(
  native: DarwinNative,
  service: string,
  sleep: Sleep = delay,
): Promise<void> {
  const found = lookUp(native, service);
  if (found.kr !== DARWIN.KERN_SUCCESS) {
    throw new Error(`bootstrap_look_up(${service}) returned ${found.kr}`);
  }
  const doctor = found.port;
  const inbox = allocate(native);
  let surfacePort = 0;
  let surface: PointerValue = null;
  let held = 0;
  const ack = (words: number[] = []) =>
    sendOrThrow(native, {
      remote: doctor,
      remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
      id: DOCTOR_MSG.ACK,
      words,
    });
  try {
    sendOrThrow(native, {
      remote: doctor,
      remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
      id: DOCTOR_MSG.HELLO,
      reply: { name: inbox, disposition: DARWIN.MACH_MSG_TYPE_MAKE_SEND },
    });
    for (;;) {
      const m = await receive(native, inbox, 60_000, sleep);
      switch (m.id) {
        case DOCTOR_MSG.SURFACE: {
          surfacePort = m.port;
          surface = native.IOSurfaceLookupFromMachPort(surfacePort);
          ack(
            surface === null
              ? [0xffffffff, 0, 0]
              : [firstByte(native, surface), native.IOSurfaceIsInUse(surface) ? 1 : 0, 1],
          );
          break;
        }
        case DOCTOR_MSG.DROP_PORT:
          native.mach_port_deallocate(native.taskSelf, surfacePort);
          surfacePort = 0;
          ack();
          break;
        case DOCTOR_MSG.RELEASE:
          if (surface !== null) native.CFRelease(surface);
          surface = null;
          ack();
          break;
        case DOCTOR_MSG.HOLD:
          held = m.port;
          ack();
          break;
        case DOCTOR_MSG.CHECK_IN: {
          // The doctor's live name, checked in from this (another) process: refused.
          const taken = checkIn(native, service);
          if (taken.kr === DARWIN.BOOTSTRAP_SUCCESS) destroyReceive(native, taken.port);
          ack([taken.kr]);
          break;
        }
        case DOCTOR_MSG.EXIT:
          return;
        default:
          throw new Error(`unexpected message ${hex(m.id)}`);
      }
    }
  } finally {
    if (surface !== null) native.CFRelease(surface);
    for (const name of [surfacePort, held, doctor]) {
      if (name !== 0) native.mach_port_deallocate(native.taskSelf, name);
    }
    destroyReceive(native, inbox);
  }
}

// --- what needs a peer process ---------------------------------------------------------------

const notRun = (id: string, why: string): Check => ({ id, status: "not-run", detail: why });

const PEER_CHECKS = [
  "macos.bootstrap.roundtrip",
  "macos.audit-trailer",
  "macos.bootstrap.taken",
  "macos.inuse.port",
  "macos.inuse.queued",
  "macos.inuse.lookup",
  "macos.inuse.lookup-ref",
  "macos.inuse.release",
  "macos.nosenders.kill",
];

/**
 * The checks with a peer: a bootstrap round trip, the audit trailer of its
 * message, an IOSurface's use count as its port is made, queued, looked up,
 * dropped and released in the peer, and the no-senders notification when
 * the peer is killed holding the only send right.
 */
export async function peerChecks(
  native: DarwinNative,
  launch: PeerLauncher,
  sleep: Sleep = delay,
): Promise<Check[]> {
  const checks: Check[] = [];
  const service = serviceName(`doctor-${Date.now().toString(36)}`);
  const registered = checkIn(native, service);
  if (registered.kr !== DARWIN.BOOTSTRAP_SUCCESS) {
    return [
      {
        id: PEER_CHECKS[0],
        status: "failed",
        detail: `bootstrap_check_in(${service}) returned ${registered.kr}`,
      },
      ...PEER_CHECKS.slice(1).map((id) => notRun(id, "needs the bootstrap round trip")),
    ];
  }
  const inbox = registered.port;
  let peer: PeerHandle | undefined;
  let peerPort = 0;
  let surface: PointerValue = null;
  let killed = false;
  const next = () => receive(native, inbox, PEER_TIMEOUT_MS, sleep);
  const tell = (id: number, port?: { name: number; disposition: number }) =>
    sendOrThrow(native, {
      remote: peerPort,
      remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
      id,
      port,
    });
  const acked = async () => {
    const m = await next();
    if (m.id !== DOCTOR_MSG.ACK) throw new Error(`the peer answered ${hex(m.id)}`);
    return m;
  };
  try {
    try {
      peer = launch(service);
    } catch (error) {
      throw new Error(
        `could not start the peer process: ${errorText(error)} (doctor needs --allow-run)`,
      );
    }
    const hello = await next().catch(async (error) => {
      const exit = await Promise.race([
        peer!.exited.then(() => "", (e) => errorText(e)),
        sleep(10),
      ]);
      throw new Error(
        `no hello from the peer: ${errorText(error)}${exit ? `; it said: ${exit}` : ""}`,
      );
    });
    peerPort = hello.reply;
    const [euid, egid] = hello.sender;
    const audit = hello.audit;
    checks.push({
      id: "macos.bootstrap.roundtrip",
      status: hello.id === DOCTOR_MSG.HELLO && peerPort !== 0 ? "ok" : "failed",
      detail:
        `checked in ${service}; pid ${peer.pid} looked it up and said hello with a reply right`,
    });
    const trailerOk = audit[5] === peer.pid && audit[1] === euid && audit[2] === egid &&
      euid === native.geteuid();
    checks.push({
      id: "macos.audit-trailer",
      status: trailerOk ? "confirmed" : "refuted",
      detail: `audit token [${audit.join(", ")}]: pid val[5]=${audit[5]} (peer ${peer.pid}), ` +
        `euid val[1]=${audit[1]}, egid val[2]=${audit[2]} (security token ${euid}/${egid}, ` +
        `our euid ${native.geteuid()}), pid version val[7]=${audit[7]}`,
      facts: { audit, sender: hello.sender, peerPid: peer.pid },
    });

    // A live name checked in again: by this process, then by the peer.
    const own = checkIn(native, service);
    if (own.kr === DARWIN.BOOTSTRAP_SUCCESS) destroyReceive(native, own.port);
    tell(DOCTOR_MSG.CHECK_IN);
    const [byPeer] = (await acked()).words;
    const takenOk = own.kr === DARWIN.BOOTSTRAP_SERVICE_ACTIVE &&
      byPeer === DARWIN.BOOTSTRAP_NOT_PRIVILEGED;
    checks.push({
      id: "macos.bootstrap.taken",
      status: takenOk ? "confirmed" : "refuted",
      detail: `check-in of a live name: by its own process ${own.kr}, by another process ` +
        `${byPeer} (SERVICE_ACTIVE 1103 and NOT_PRIVILEGED 1100 expected; listen() tells a ` +
        "taken name from a closed one by a look-up after either)",
      facts: { own: own.kr, byPeer },
    });

    // A surface's use count, step by step.
    surface = createSurface(native, 0xa5);
    const inUseBefore = native.IOSurfaceIsInUse(surface);
    const port = native.IOSurfaceCreateMachPort(surface);
    const inUseWithPort = native.IOSurfaceIsInUse(surface);
    checks.push({
      id: "macos.inuse.port",
      status: !inUseBefore && inUseWithPort ? "confirmed" : "refuted",
      detail: `IOSurfaceIsInUse ${inUseBefore} before IOSurfaceCreateMachPort, ${inUseWithPort} ` +
        "while its port lives (false, then true expected)",
      facts: { inUseBefore, inUseWithPort },
    });
    tell(DOCTOR_MSG.SURFACE, { name: port, disposition: DARWIN.MACH_MSG_TYPE_MOVE_SEND });
    const inUseQueued = native.IOSurfaceIsInUse(surface);
    checks.push({
      id: "macos.inuse.queued",
      status: inUseQueued ? "confirmed" : "refuted",
      detail: `in use ${inUseQueued} while the port is queued to the peer (true expected)`,
    });
    const looked = await acked();
    const [byte, peerSeesInUse, found] = looked.words;
    const inUseLookedUp = native.IOSurfaceIsInUse(surface);
    checks.push({
      id: "macos.inuse.lookup",
      status: found === 1 && byte === 0xa5 && inUseLookedUp ? "confirmed" : "refuted",
      detail: `the peer looked the port up (${found === 1 ? "found" : "NULL"}), read byte ${
        hex(byte)
      } (0xa5 written), sees in use ${peerSeesInUse === 1}; here in use ${inUseLookedUp}`,
      facts: { byte, peerSeesInUse, found, inUseLookedUp },
    });
    tell(DOCTOR_MSG.DROP_PORT);
    await acked();
    const inUseRefOnly = native.IOSurfaceIsInUse(surface);
    checks.push({
      id: "macos.inuse.lookup-ref",
      status: !inUseRefOnly ? "confirmed" : "refuted",
      detail: `with the peer's port dropped but its looked-up IOSurfaceRef kept: in use ` +
        `${inUseRefOnly} (the test double assumes a bare reference is not a use; surfaceport ` +
        "keeps the port for as long as a frame is open, so it does not depend on this)",
      facts: { inUseRefOnly },
    });
    tell(DOCTOR_MSG.RELEASE);
    await acked();
    const releasedAt = performance.now();
    let inUse = native.IOSurfaceIsInUse(surface);
    while (inUse && performance.now() - releasedAt < 2000) {
      await sleep(1);
      inUse = native.IOSurfaceIsInUse(surface);
    }
    const dropMs = Math.round(performance.now() - releasedAt);
    checks.push({
      id: "macos.inuse.release",
      status: !inUse ? "confirmed" : "refuted",
      detail: inUse
        ? "still in use 2 s after the peer released everything"
        : `not in use ${dropMs} ms after the peer released the port and the surface`,
      facts: { dropMs, inUse },
    });

    // The peer is killed holding the only send right to a port with a no-senders request.
    const watched = allocate(native);
    try {
      const previous = new Uint8Array(4);
      const kr = native.mach_port_request_notification(
        native.taskSelf,
        watched,
        DARWIN.MACH_NOTIFY_NO_SENDERS,
        1,
        watched,
        DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
        previous,
      );
      if (kr !== DARWIN.KERN_SUCCESS) throw new Error(`request_notification returned ${hex(kr)}`);
      tell(DOCTOR_MSG.HOLD, { name: watched, disposition: DARWIN.MACH_MSG_TYPE_MAKE_SEND });
      await acked();
      const killedAt = performance.now();
      peer.kill();
      killed = true;
      const notification = await receive(native, watched, 5000, sleep).catch((e) => e as Error);
      const ms = Math.round(performance.now() - killedAt);
      const ok = !(notification instanceof Error) &&
        notification.id === DARWIN.MACH_NOTIFY_NO_SENDERS;
      checks.push({
        id: "macos.nosenders.kill",
        status: ok ? "confirmed" : "refuted",
        detail: ok
          ? `MACH_NOTIFY_NO_SENDERS arrived ${ms} ms after the peer was SIGKILLed`
          : `no no-senders notification after the peer was SIGKILLed: ${
            notification instanceof Error ? notification.message : hex(notification.id)
          }`,
        facts: { ms },
      });
    } finally {
      destroyReceive(native, watched);
    }
  } catch (error) {
    const done = new Set(checks.map((c) => c.id));
    const pending = PEER_CHECKS.filter((id) => !done.has(id));
    if (pending.length) {
      checks.push({ id: pending[0], status: "failed", detail: errorText(error) });
      for (const id of pending.slice(1)) checks.push(notRun(id, `needs ${pending[0]}`));
    }
  } finally {
    if (surface !== null) native.CFRelease(surface);
    if (peer && !killed) {
      if (peerPort !== 0) {
        send(native, {
          remote: peerPort,
          remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
          id: DOCTOR_MSG.EXIT,
        });
      }
      const exited = await Promise.race([
        peer.exited.then(() => true, () => true),
        sleep(5000).then(() => false),
      ]);
      if (!exited) peer.kill();
    }
    if (peerPort !== 0) native.mach_port_deallocate(native.taskSelf, peerPort);
    destroyReceive(native, inbox);
  }
  return checks;
}

/** Starts `cli/main.ts doctor --peer SERVICE` as a child deno process. */
export function childPeer(service: string): PeerHandle {
  const main = new URL("./main.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      main,
      "doctor",
      "--peer",
      service,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return {
    pid: child.pid,
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
    exited: child.output().then((output) => {
      if (!output.success && output.signal !== "SIGKILL") {
        throw new Error(new TextDecoder().decode(output.stderr).trim() || `exit ${output.code}`);
      }
    }),
  };
}

/** `doctor --peer SERVICE`: the peer process of the macOS checks. */
export async function runPeerProcess(service: string): Promise<number> {
  try {
    await runDoctorPeer(realDarwinNative(), service);
    return 0;
  } catch (error) {
    console.error(`doctor peer: ${errorText(error)}`);
    return 1;
  }
}
