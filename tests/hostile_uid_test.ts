/**
 * Hostile peers over real sockets: a peer running as another user (nobody,
 * started with setpriv; needs root). The listener's and the client's default
 * checks refuse it, `allowPeer` admits it, and a memfd it cannot reopen is a
 * typed `ProtocolError` on its side.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, Surface } from "../mod.ts";
import { fillPattern } from "../examples/pattern.ts";
import { libc } from "../ffi/linux.ts";
import { Child, openFds, PEER_FLAGS, settleRuntimeFds, uniqueName, waitUntil } from "./helpers.ts";
import { SIZE, validMessage } from "./hostile/attacks.ts";
import {
  assertFdBaseline,
  assertServesGoodClient,
  GOOD_FRAME,
  GOOD_PATTERN_FRAME,
} from "./hostile/checks.ts";
import { closeAll, makeMemfd, RawPeer } from "./hostile/raw.ts";
import { RecordingServer } from "./hostile/server.ts";

const linux = Deno.build.os === "linux";

const NOBODY = 65534;
const isRoot = linux && libc().geteuid() === 0;
if (linux && !isRoot) {
  console.warn(
    "hostile_uid_test.ts: SKIPPING the other-uid test: it starts a peer as nobody (uid 65534) with " +
      "setpriv, which needs root. Run the suite as root (CI does) to cover SO_PEERCRED refusal.",
  );
}

/**
 * What a process running as nobody needs, readable by nobody whatever the
 * checkout's permissions: a copy of the library and the peer scripts in a
 * 0755 temp dir, a DENO_DIR it can write, and a deno binary it can run (the
 * test's own if nobody can reach it, else a copy).
 */
async function makeNobodySandbox(): Promise<
  { root: string; deno: string; peer: string; denoDir: string }
> {
  const repo = new URL("../", import.meta.url);
  const root = await Deno.makeTempDir({ prefix: "surfaceport-nobody-" });
  await Deno.chmod(root, 0o755);
  const copy = async (relative: string) => {
    const from = new URL(relative, repo).pathname;
    const to = `${root}/${relative}`;
    if ((await Deno.stat(from)).isDirectory) {
      await Deno.mkdir(to, { recursive: true, mode: 0o755 });
      for await (const entry of Deno.readDir(from)) await copy(`${relative}/${entry.name}`);
    } else {
      await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true, mode: 0o755 });
      await Deno.copyFile(from, to);
      await Deno.chmod(to, 0o644);
    }
  };
  for (
    const path of [
      "mod.ts",
      "src",
      "ffi",
      "examples/pattern.ts",
      "tests/hostile/peer.ts",
      "tests/hostile/raw.ts",
    ]
  ) {
    await copy(path);
  }
  const denoDir = `${root}/deno_dir`;
  await Deno.mkdir(denoDir);
  await Deno.chmod(denoDir, 0o777);
  let deno = Deno.execPath();
  const probe = await new Deno.Command("setpriv", {
    args: [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--", deno, "--version"],
    stdout: "null",
    stderr: "null",
  }).output().catch((error) => {
    throw new Error(`running setpriv failed (util-linux is needed for this test): ${error}`);
  });
  if (!probe.success) {
    // The checkout (e.g. ./.deno/ under a home directory nobody cannot enter): use a copy.
    deno = `${root}/deno`;
    await Deno.copyFile(Deno.execPath(), deno);
    await Deno.chmod(deno, 0o755);
  }
  return { root, deno, peer: `${root}/tests/hostile/peer.ts`, denoDir };
}

Deno.test({
  name:
    "hostile: a peer running as another uid (nobody) is refused by default, admitted only by allowPeer",
  ignore: !isRoot,
  async fn() {
    const sandbox = await makeNobodySandbox();
    // The peer's library makes nobody's registry directory if it has none: the test removes it.
    const nobodyRegistry = `/tmp/surfaceport-${NOBODY}`;
    const nobodyRegistryExisted = await Deno.lstat(nobodyRegistry).then(() => true, () => false);
    const spawnNobody = (args: string[]) =>
      new Child(
        "setpriv",
        [
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "--",
          sandbox.deno,
          "run",
          ...PEER_FLAGS,
          sandbox.peer,
          ...args,
        ],
        { DENO_DIR: sandbox.denoDir, HOME: sandbox.denoDir, NO_COLOR: "1" },
      );
    try {
      await settleRuntimeFds();
      {
        // The default check admits only our own uid (root here).
        await using server = new RecordingServer(uniqueName("uid-default"));
        await assertServesGoodClient(server);
        const baseline = openFds();
        const before = server.connections.length;
        {
          // It admits our uid 0 itself, so only the listener's check can refuse it.
          await using nobody = spawnNobody(["client", server.name, "5", "0"]);
          assert.equal(
            await nobody.line(/^connected /, 30000),
            `connected ${NOBODY}`,
            nobody.stderr,
          );
          assert.equal(await nobody.line(/^hung up /), "hung up PeerClosedError");
          assert.equal((await nobody.exit()).code, 0, nobody.stderr);
        }
        assert.equal(server.connections.length, before, "the refused peer never reached accept()");
        assertFdBaseline(baseline, "after the refused peer");
        await assertServesGoodClient(server);
        {
          // The client's own default check refuses a listener of another uid, too.
          await using strict = spawnNobody(["client", server.name, "5"]);
          const status = await strict.exit(30000);
          assert.notEqual(status.code, 0);
          assert.match(
            strict.stderr,
            /PeerRefusedError: connect\(.*\): the listener runs as uid 0/,
          );
        }
        assertFdBaseline(baseline, "after the refusing client");
      }
      {
        // Admitted through the predicate, and only it.
        const seen: number[] = [];
        await using server = new RecordingServer(uniqueName("uid-allowed"), {
          allowPeer: (peer) => {
            seen.push(peer.uid);
            return peer.uid === NOBODY;
          },
        });
        await using nobody = spawnNobody(["client", server.name, "6", "0"]);
        const [log] = await server.waitForConnections(1, 30000);
        assert.equal(log.channel.peer.uid, NOBODY);
        assert.equal(log.channel.peer.gid, NOBODY);
        await waitUntil(() => log.events.length > 0, 10000, "nobody's frame");
        assert.deepEqual(log.events, [GOOD_PATTERN_FRAME], "root maps nobody's surface");
        // And nobody maps ours.
        using surface = Surface.create({ width: 64, height: 32 });
        fillPattern(surface, 8);
        await log.channel.send(surface, { seed: 8 }, { timeout: 5000 });
        assert.equal(await nobody.line(/^got /), "got ok", nobody.stderr);
        // Our own uid is now the one refused: a root client is skipped by accept().
        await assert.rejects(
          (async () => {
            using client = await connect(server.name, { timeout: 5000 });
            await client.receive({ timeout: 5000 });
          })(),
          (error: unknown) => (error as Error).name === "PeerClosedError",
        );
        assert.equal(server.connections.length, 1);
        assert.deepEqual(seen, [NOBODY, 0]);
        log.channel.close();
        assert.equal(await nobody.line(/^hung up /), "hung up PeerClosedError");
        assert.equal((await nobody.exit()).code, 0, nobody.stderr);
      }
      {
        // A memfd of mode 000: root could reopen it, a receiver of another uid cannot.
        const name = uniqueName("uid-mode");
        await using server = spawnNobody(["server", name, "0", "2"]);
        await server.line("listening", 30000);
        const raw = RawPeer.connect(name);
        try {
          const memfd = makeMemfd(SIZE, { mode: 0 });
          try {
            await raw.sendWaiting(validMessage(), { fds: [memfd] });
          } finally {
            closeAll(memfd);
          }
          await raw.sendValid();
          assert.equal(await server.line(/^protocol:/), "protocol:NO_PERMISSION", server.stderr);
          assert.equal(await server.line(/^frame /), GOOD_FRAME, server.stderr);
          const [before, after] = (await server.line(/^fds /)).split(" ").slice(1);
          assert.equal(after, before, "the receiver closed every descriptor");
          assert.equal(await server.line("done"), "done");
        } finally {
          raw.close();
        }
        assert.equal((await server.exit()).code, 0, server.stderr);
      }
    } finally {
      await Deno.remove(sandbox.root, { recursive: true });
      if (!nobodyRegistryExisted) {
        await Deno.remove(nobodyRegistry, { recursive: true }).catch(() => {});
      }
    }
  },
});
