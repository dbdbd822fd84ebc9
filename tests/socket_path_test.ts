/**
 * A filesystem channel name already taken: `listen`, `publish` and to-gst
 * replace only a stale socket of their own user (nothing accepts on it, in a
 * directory no other user can change); a regular file, a link, a FIFO, a
 * directory, another user's socket or a live socket stay untouched and the
 * call fails with EADDRINUSE saying what is there.
 */

import assert from "node:assert/strict";
import { listen, publish, SystemCallError } from "../mod.ts";
import { libc } from "../ffi/linux.ts";
import { GstSinkBridge } from "../src/gst/to_gst.ts";
import { Child, spawnPeer } from "./helpers.ts";

const isRoot = libc().geteuid() === 0;

/** Expects `bind` to be refused with EADDRINUSE naming `what`. */
function assertOccupied(open: () => { close(): void }, what: RegExp): void {
  assert.throws(() => open().close(), (error) => {
    assert.ok(error instanceof SystemCallError, String(error));
    assert.equal(error.errnoName, "EADDRINUSE");
    assert.match(error.message, what);
    return true;
  });
}

async function withDirectory(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sp-path-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A Python process listening on a SOCK_SEQPACKET socket at `path`, optionally as another uid. */
function pythonListener(path: string, asNobody = false): Child {
  const script = "import socket,sys\n" +
    "s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n" +
    "s.bind(sys.argv[1]);s.listen(8);print('ready',flush=True);sys.stdin.read()";
  return asNobody
    ? new Child("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "/usr/bin/python3", // not a per-user shim that another uid cannot read
      "-c",
      script,
      path,
    ])
    : new Child("python3", ["-c", script, path]);
}

Deno.test("a regular file at the name survives listen, publish and to-gst", async () => {
  await withDirectory(async (dir) => {
    const path = `${dir}/precious`;
    await Deno.writeTextFile(path, "keep me");
    assertOccupied(() => listen(path), /is a regular file of uid/);
    assertOccupied(() => publish(path), /is a regular file of uid/);
    assertOccupied(() => GstSinkBridge.listen(path), /is a regular file of uid/);
    assert.equal(await Deno.readTextFile(path), "keep me");
  });
});

Deno.test("a symlink, a FIFO or a directory at the name is left alone", async () => {
  await withDirectory(async (dir) => {
    const target = `${dir}/target`;
    await Deno.writeTextFile(target, "target");
    await Deno.symlink(target, `${dir}/link`);
    assertOccupied(() => listen(`${dir}/link`), /is a symbolic link/);
    assert.ok((await Deno.lstat(`${dir}/link`)).isSymlink);
    assert.equal(await Deno.readTextFile(target), "target");

    await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assertOccupied(() => listen(`${dir}/fifo`), /is a FIFO/);
    assert.ok((await Deno.lstat(`${dir}/fifo`)).isFifo);

    await Deno.mkdir(`${dir}/sub`);
    assertOccupied(() => listen(`${dir}/sub`), /is a directory/);
    assert.ok((await Deno.lstat(`${dir}/sub`)).isDirectory);
  });
});

Deno.test("a live socket at the name (another process listens) is not replaced", async () => {
  await withDirectory(async (dir) => {
    const path = `${dir}/live`;
    await using peer = pythonListener(path);
    await peer.line("ready");
    assertOccupied(() => listen(path), /live socket/);
    assertOccupied(() => GstSinkBridge.listen(path), /live socket/); // another socket type: live too
  });
});

Deno.test("a stale socket of this user (its listener was killed) is replaced", async () => {
  await withDirectory(async (dir) => {
    const path = `${dir}/stale`;
    {
      await using peer = spawnPeer("listen_forever.ts", [path]);
      await peer.line("listening");
      assert.ok((await Deno.lstat(path)).isSocket, "bound while the peer lives");
      peer.process.kill("SIGKILL");
      await peer.process.status;
    } // SIGKILLed: the socket file stays
    assert.ok((await Deno.lstat(path)).isSocket, "left behind by the killed peer");
    const listener = listen(path);
    try {
      assert.equal(((await Deno.stat(path)).mode ?? 0) & 0o777, 0o600);
    } finally {
      listener.close();
    }
    await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
  });
});

Deno.test("a stale socket in a directory other users may change is not replaced", async () => {
  await withDirectory(async (dir) => {
    const open = `${dir}/open`;
    await Deno.mkdir(open);
    await Deno.chmod(open, 0o777); // not sticky: anyone could swap the checked socket for a link
    const path = `${open}/stale`;
    {
      await using peer = pythonListener(path);
      await peer.line("ready");
    }
    assertOccupied(() => listen(path), /directory that another user can change/);
    assert.ok((await Deno.lstat(path)).isSocket);
  });
});

Deno.test({
  name: "another user's stale socket is not replaced" +
    (isRoot ? "" : " (ignored: needs root to run a listener as uid 65534)"),
  ignore: !isRoot,
  fn: async () => {
    await withDirectory(async (dir) => {
      const shared = `${dir}/shared`;
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o1777); // sticky, like /tmp
      await Deno.chmod(dir, 0o755);
      const path = `${shared}/theirs`;
      {
        await using peer = pythonListener(path, true);
        await peer.line("ready");
      }
      assert.equal((await Deno.lstat(path)).uid, 65534);
      assertOccupied(() => listen(path), /socket of uid 65534/);
      assert.ok((await Deno.lstat(path)).isSocket);
    });
  },
});

Deno.test("close removes only the socket it made, not one bound there since", async () => {
  await withDirectory(async (dir) => {
    const path = `${dir}/moved`;
    const listener = listen(path);
    try {
      await Deno.rename(path, `${dir}/elsewhere`);
      await Deno.writeTextFile(path, "new owner");
    } finally {
      listener.close();
    }
    assert.equal(await Deno.readTextFile(path), "new owner");
  });
});
