/**
 * The shrink race of issue 10: a sender passes an *unsealed* memfd of the
 * right size, waits until the receiver's `recvmsg` has taken the message off
 * the queue (`SIOCOUTQ` drops to 0), then shrinks the memfd to one page and
 * only then seals it against shrinking and growing. A receiver that read the
 * size before the seals sees the right size and then the seals, maps it,
 * and dies with `SIGBUS` on its first touch past the new end. One that reads
 * the seals first sees either no seals (`UNSEALED`) or the final, wrong size
 * (`SIZE_MISMATCH`), and never maps it.
 *
 * Both sides run as child processes (a receiver that crashes must not take
 * the test runner with it):
 *
 * - `receive NAME TRIES`: listens, accepts one connection, receives TRIES
 *   messages, touches the last byte of every frame it gets, and prints
 *   `done {counts} fds BEFORE AFTER`.
 * - `attack NAME TRIES`: connects raw and races TRIES times.
 *
 * {@link runShrinkRace} runs the pair (the suite with a bounded number of
 * tries, `deno task fuzz` with thousands).
 *
 * @module
 */

import { listen, ProtocolError } from "../../mod.ts";
import { Child, openFds, PEER_FLAGS, settleRuntimeFds, sleep, uniqueName } from "../helpers.ts";
import { LINUX } from "../../src/linux/structs.ts";
import { closeAll, makeMemfd, rawLibc, RawPeer, smallGeometry, surfaceMessage } from "./raw.ts";

/** What the receiver saw, by outcome: `frame`, or `protocol:REASON`. */
export type RaceCounts = Record<string, number>;

/** The outcome of {@link runShrinkRace}. */
export interface RaceResult {
  counts: RaceCounts;
  /** The receiver's descriptor count with the connection open, before and after the race. */
  fdsBefore: number;
  fdsAfter: number;
}

/**
 * Races `tries` times. Throws if the receiver did not finish cleanly (e.g.
 * it was killed by `SIGBUS`), naming the signal and the last progress line.
 */
export async function runShrinkRace(tries: number, timeoutMs = 120000): Promise<RaceResult> {
  const name = uniqueName("shrink-race");
  const script = new URL(import.meta.url).pathname;
  await using receiver = new Child(Deno.execPath(), [
    "run",
    ...PEER_FLAGS,
    script,
    "receive",
    name,
    String(tries),
  ]);
  await receiver.line("listening");
  await using attacker = new Child(Deno.execPath(), [
    "run",
    ...PEER_FLAGS,
    script,
    "attack",
    name,
    String(tries),
  ]);
  const status = await receiver.exit(timeoutMs);
  if (!status.success) {
    throw new Error(
      `the receiver did not survive the shrink race: exit code ${status.code}, signal ${status.signal}` +
        `\nattacker stderr: ${attacker.stderr}\nreceiver stderr: ${receiver.stderr}`,
    );
  }
  const done = await receiver.line(/^done /);
  const match = /^done (\{.*\}) fds (\d+) (\d+)$/.exec(done);
  if (!match) throw new Error(`unexpected receiver output: ${done}`);
  const attackerStatus = await attacker.exit(10000);
  if (!attackerStatus.success) throw new Error(`the attacker failed: ${attacker.stderr}`);
  return { counts: JSON.parse(match[1]), fdsBefore: Number(match[2]), fdsAfter: Number(match[3]) };
}

async function receive(name: string, tries: number): Promise<void> {
  using listener = listen(name);
  console.log("listening");
  using channel = await listener.accept({ timeout: 20000 });
  await settleRuntimeFds();
  await sleep(50); // the poller closes its eventfd a few microtasks after the accept's wait ended
  const fdsBefore = openFds().length;
  const counts: RaceCounts = {};
  for (let i = 0; i < tries; i++) {
    let outcome: string;
    try {
      using frame = await channel.receive({ timeout: 20000 });
      const bytes = frame.surface.bytes(0);
      bytes[bytes.length - 1] ^= 1; // past a shrunk end: SIGBUS
      outcome = "frame";
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      outcome = `protocol:${error.reason}`;
    }
    counts[outcome] = (counts[outcome] ?? 0) + 1;
  }
  console.log(`done ${JSON.stringify(counts)} fds ${fdsBefore} ${openFds().length}`);
}

function attack(name: string, tries: number): void {
  const libc = rawLibc();
  const geometry = smallGeometry();
  const message = surfaceMessage(geometry);
  const raw = RawPeer.connect(name);
  try {
    for (let i = 0; i < tries; i++) {
      const fd = makeMemfd(geometry.allocSize, { seals: 0 });
      try {
        // Blocking is fine here: this process has nothing else to do.
        for (let spins = 0; raw.send(message, { fds: [fd] }) !== 0; spins++) {
          if (spins > 1e8) throw new Error("the receiver stopped reading");
        }
        const end = performance.now() + 10000;
        for (let spins = 0; raw.unreadBytes() > 0; spins++) {
          if (spins % 4096 === 0 && performance.now() > end) {
            throw new Error("the receiver stopped reading");
          }
        }
        // The message has left the queue: the receiver is checking it right now.
        if (libc.ftruncate(fd, 4096n) < 0) throw new Error("ftruncate failed");
        const seals = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL;
        if (libc.fcntl(fd, LINUX.F_ADD_SEALS, seals) < 0) throw new Error("F_ADD_SEALS failed");
      } finally {
        closeAll(fd);
      }
    }
  } finally {
    raw.close();
  }
}

if (import.meta.main) {
  const [mode, name, tries] = Deno.args;
  if (mode === "receive") await receive(name, Number(tries));
  else if (mode === "attack") attack(name, Number(tries));
  else throw new Error(`unknown mode ${mode}`);
}
