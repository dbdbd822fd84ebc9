/**
 * The doorbell (`src/linux/doorbell.ts`, "Doorbell" in `docs/protocol.md`):
 * two surfaceport processes bind it and a parked receive is woken through it
 * instead of the shared poll; a parked receiver costs no CPU; a stranger who
 * reaches it, or a peer that sends a bad DOORBELL, causes at most a spurious
 * wake-up — never a frame, a leak or a stall. (The C peer's ringing is in
 * `tests/c_peer_test.ts`; two ends in one process get no doorbell.)
 *
 * @module
 */

import assert from "node:assert/strict";
import process from "node:process";
import { libc } from "../ffi/linux.ts";
import { type Channel, listen, Surface } from "../mod.ts";
import { bellTower } from "../src/linux/bell_tower.ts";
import { bellDirectory, bellPath, doorbellStats } from "../src/linux/doorbell.ts";
import { encodeBellHello, encodeDoorbell } from "../src/wire/doorbell_wire.ts";
import { assertNoFdLeak, Child, PEER_FLAGS, sleep, uniqueName } from "./helpers.ts";
import { closeAll, makeMemfd, RawPeer, smallGeometry, surfaceMessage } from "./hostile/raw.ts";

const ignore = Deno.build.os !== "linux";

/** Counts of parked waits since `start`. */
function since(start: typeof doorbellStats) {
  return {
    bell: doorbellStats.bellWaits - start.bellWaits,
    poll: doorbellStats.pollWaits - start.pollWaits,
    empty: doorbellStats.emptyWakes - start.emptyWakes,
  };
}

const BELL_PEER = new URL("./peers/bell_peer.ts", import.meta.url).pathname;

/**
 * Runs `body` with a channel to an echo peer in another process (ends in one
 * process get no doorbell), once both doorbells are bound.
 */
async function withEchoPeer(body: (channel: Channel, surface: Surface) => Promise<void>) {
  const name = uniqueName("bell");
  using listener = listen(name);
  await using peer = new Child(Deno.execPath(), [
    "run",
    ...PEER_FLAGS,
    "--allow-net",
    BELL_PEER,
    name,
    "2",
  ]);
  using channel = await listener.accept({ timeout: 10_000 });
  await peer.line("connected");
  using surface = Surface.create({ width: 64, height: 64 });
  // The first exchanges carry each side's DOORBELL; the bells bind as their HELLOs arrive.
  await roundTrips(channel, surface, 3);
  await sleep(50);
  await body(channel, surface);
}

/** Sends and receives the echo `rounds` times: each receive parks (the peer waits 2 ms). */
async function roundTrips(channel: Channel, surface: Surface, rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await channel.send(surface);
    (await channel.receive({ timeout: 10_000 })).close();
  }
}

Deno.test({
  name:
    "doorbell: two surfaceport processes bind it; parked receives wake through it, not the poll",
  ignore,
  async fn() {
    await withEchoPeer(async (channel, surface) => {
      const start = { ...doorbellStats };
      await roundTrips(channel, surface, 20);
      const counts = since(start);
      assert.equal(
        counts.poll,
        0,
        `no receive parks on the shared poll: ${JSON.stringify(counts)}`,
      );
      assert.ok(counts.bell >= 15, `receives park on the doorbell: ${JSON.stringify(counts)}`);
      assert.ok(counts.empty <= 2, `rings are not spurious: ${JSON.stringify(counts)}`);
    });
  },
});

Deno.test({
  name:
    "doorbell: a receive that timed out on it leaves it working (the next frame still wakes it)",
  ignore,
  async fn() {
    await withEchoPeer(async (channel, surface) => {
      const start = { ...doorbellStats };
      for (let i = 0; i < 3; i++) {
        const late = await channel.receive({ timeout: 30 }).catch((error) => error);
        assert.equal(late.name, "TimeoutError");
        await roundTrips(channel, surface, 2);
      }
      const counts = since(start);
      assert.equal(counts.poll, 0, JSON.stringify(counts));
      assert.ok(counts.bell >= 3, JSON.stringify(counts));
    });
  },
});

Deno.test({
  name:
    "doorbell: parked receives with a timeout share one deadline timer instead of arming one per park",
  ignore,
  async fn() {
    await withEchoPeer(async (channel, surface) => {
      const start = { ...doorbellStats };
      await roundTrips(channel, surface, 20); // each receive parks with a 10 s timeout
      const counts = since(start);
      assert.ok(counts.bell >= 15, `receives park on the doorbell: ${JSON.stringify(counts)}`);
      const timers = doorbellStats.deadlineTimers - start.deadlineTimers;
      assert.ok(timers <= 1, `${timers} deadline timers armed for ${counts.bell} parks`);
      // And the shared timer still ends a wait that nothing wakes, then re-arms for the next.
      const late = await Promise.race([
        channel.receive({ timeout: 30 }).catch((error) => error),
        sleep(3000).then(() => new Error("the 30 ms timeout had not ended the wait after 3 s")),
      ]);
      assert.equal(late.name, "TimeoutError", late.message);
      await roundTrips(channel, surface, 2);
    });
  },
});

/** CPU time of the calling thread, in ms (CLOCK_THREAD_CPUTIME_ID). */
function threadCpuMs(): number {
  const timespec = new BigInt64Array(2);
  if (libc().clock_gettime(3, new Uint8Array(timespec.buffer)) !== 0) {
    throw new Error("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
  }
  return Number(timespec[0]) * 1000 + Number(timespec[1]) / 1e6;
}

Deno.test({
  name: "doorbell: a receiver parked for 2 s with no traffic uses at most 4 ms of its " +
    "event loop's CPU per second (20 ms of the whole process's)",
  ignore,
  async fn() {
    await withEchoPeer(async (channel) => {
      const start = { ...doorbellStats };
      const received = channel.receive({ timeout: 2000 }).catch((error) => error);
      const cpu = process.cpuUsage();
      const loopCpu = threadCpuMs();
      const t0 = performance.now();
      const outcome = await received;
      const seconds = (performance.now() - t0) / 1000;
      const loopPerSecond = (threadCpuMs() - loopCpu) / seconds;
      const used = process.cpuUsage(cpu);
      const processPerSecond = (used.user + used.system) / 1000 / seconds;
      assert.equal((outcome as Error).name, "TimeoutError");
      assert.equal(since(start).bell, 1, "it was parked on the doorbell");
      console.log(
        `  ${loopPerSecond.toFixed(2)} ms/s of CPU on the event loop's thread, ` +
          `${processPerSecond.toFixed(2)} ms/s in the process, parked`,
      );
      // A wake-up per ms on the event loop (a polling timer) costs >= 10 ms/s on this thread; a
      // thread spinning anywhere ~1000 ms/s. The process's figure also has V8's and Deno's own
      // threads (GC, a test's leftovers), which once took 5.3 ms/s here: hence the two bounds.
      assert.ok(loopPerSecond <= 4, `${loopPerSecond.toFixed(2)} ms/s on the event loop`);
      assert.ok(processPerSecond <= 20, `${processPerSecond.toFixed(2)} ms/s in the process`);
    });
  },
});

Deno.test({
  name: "doorbell: lives in a 0700 directory of this user, as DIR/bell-PID",
  ignore,
  fn() {
    assert.ok(bellTower.open, "the test process has a doorbell (tests run with --allow-net)");
    const dir = Deno.lstatSync(bellDirectory());
    assert.ok(dir.isDirectory);
    assert.equal(dir.uid, libc().geteuid());
    assert.equal(dir.mode! & 0o777, 0o700);
    assert.ok(Deno.lstatSync(bellPath(Deno.pid)).isSocket);
  },
});

Deno.test({
  name:
    "doorbell: a stranger who reaches it causes at most a spurious wake-up: no frame, no stall, no leak",
  ignore,
  sanitizeResources: false, // the strangers' own connections close a turn after close()
  async fn() {
    await assertNoFdLeak(async () => {
      await withEchoPeer(async (channel, surface) => {
        const strangers: Deno.UnixConn[] = [];
        try {
          const reach = () => Deno.connect({ transport: "unix", path: bellPath(Deno.pid) });
          // Garbage, a HELLO with a token nobody claimed, one followed by a flood, silence.
          const garbage = await reach();
          await garbage.write(new Uint8Array(24).fill(0x41));
          const unclaimed = await reach();
          await unclaimed.write(encodeBellHello(crypto.getRandomValues(new Uint8Array(16))));
          const flood = await reach();
          await flood.write(encodeBellHello(crypto.getRandomValues(new Uint8Array(16))));
          await flood.write(new Uint8Array(4096).fill(1));
          const silent = await reach();
          strangers.push(garbage, unclaimed, flood, silent);
          // The channel goes on as before, on its doorbell: frames arrive, each exactly once.
          const start = { ...doorbellStats };
          await roundTrips(channel, surface, 10);
          assert.equal(since(start).poll, 0);
          const extra = await channel.receive({ timeout: 50 }).catch((error) => error);
          assert.equal(extra.name, "TimeoutError", "no frame came from a stranger");
          // A bad HELLO is hung up on at once; a silent stranger after its 2 s.
          const buffer = new Uint8Array(64);
          assert.equal(await garbage.read(buffer), null);
          const deadline = setTimeout(() => silent.close(), 10_000);
          try {
            assert.equal(await silent.read(buffer), null, "the silent stranger was hung up on");
          } finally {
            clearTimeout(deadline);
          }
        } finally {
          for (const conn of strangers) {
            try {
              conn.close();
            } catch {
              // closed already
            }
          }
        }
      });
    });
  },
});

Deno.test({
  name:
    "doorbell: a DOORBELL without a sealed 4096-byte page, or a second one, binds nothing and leaks nothing",
  ignore,
  async fn() {
    await assertNoFdLeak(async () => {
      await hostileDoorbells();
      await sleep(100); // Deno closes a socket whose read was pending once that read ends
    });
  },
});

async function hostileDoorbells(): Promise<void> {
  const name = `bell-hostile-${Deno.pid}-${Math.random().toString(36).slice(2)}`;
  using listener = listen(name);
  const peer = RawPeer.connect(name);
  try {
    using channel = await listener.accept({ timeout: 5000 });
    const token = crypto.getRandomValues(new Uint8Array(16));
    const message = encodeDoorbell(token);
    const unsealed = makeMemfd(4096, { seals: 0 });
    const small = makeMemfd(64);
    const large = makeMemfd(8192);
    const a = makeMemfd(4096);
    const b = makeMemfd(4096);
    try {
      peer.sendOrThrow(message); // no page
      peer.sendOrThrow(message, { fds: [unsealed] });
      peer.sendOrThrow(message, { fds: [small] });
      peer.sendOrThrow(message, { fds: [large] });
      peer.sendOrThrow(message, { fds: [a, b] }); // two descriptors: not a DOORBELL
    } finally {
      closeAll(unsealed, small, large, a, b);
    }
    await assert.rejects(channel.receive({ timeout: 5000 }), { name: "ProtocolError" });
    // A HELLO for that token on the doorbell binds nothing: no DOORBELL with a valid page named it.
    const stranger = await Deno.connect({ transport: "unix", path: bellPath(Deno.pid) });
    await stranger.write(encodeBellHello(token));
    await sleep(200); // the doorbell has read it by now (and would bind it, were the page valid)
    const memfd = makeMemfd(smallGeometry().allocSize);
    try {
      peer.sendOrThrow(surfaceMessage(smallGeometry()), { fds: [memfd] });
    } finally {
      closeAll(memfd);
    }
    const start = { ...doorbellStats };
    using frame = await channel.receive({ timeout: 5000 });
    assert.equal(frame.surface.width, 64);
    const parked = channel.receive({ timeout: 150 }).catch((error) => error);
    assert.equal((await parked).name, "TimeoutError");
    assert.deepEqual(since(start), { bell: 0, poll: 1, empty: 0 }, "it parked on the poll");
    stranger.close();
  } finally {
    closeAll(peer.fd);
  }
}

Deno.test({
  name: "doorbell: a peer without a doorbell is never sent a DOORBELL (it would be BAD_TYPE there)",
  ignore,
  async fn() {
    const name = `bell-raw-${Deno.pid}-${Math.random().toString(36).slice(2)}`;
    using listener = listen(name);
    // A raw peer in another process: nothing listens at its doorbell path.
    const child = new Deno.Command("python3", {
      args: [
        "-c",
        `import socket,sys,select
s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)
s.connect(b"\\0surfaceport/${name}")
print("connected",flush=True)
r,_,_=select.select([s],[],[],1.0)
print("quiet" if not r else "got %d bytes" % len(s.recv(4096)),flush=True)`,
      ],
      stdout: "piped",
    }).spawn();
    try {
      using _channel = await listener.accept({ timeout: 5000 });
      const out = new TextDecoder().decode((await child.output()).stdout);
      assert.match(out, /quiet/);
    } finally {
      try {
        child.kill();
      } catch {
        // exited
      }
    }
  },
});
