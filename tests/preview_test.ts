/**
 * `surfaceport preview` against other local users and greedy pages: without
 * the token it printed, every request — from another uid (nobody) forging
 * `Host` and `Origin`, or from anyone with a wrong token — gets the same
 * 403; a name is answered from `list()` alone (an existing and a missing
 * file look the same); a page that never reads costs bounded memory.
 */

import assert from "node:assert/strict";
import { libc } from "../ffi/linux.ts";
import { Child, CLI, CLI_FLAGS, uniqueName } from "./helpers.ts";

const linux = Deno.build.os === "linux";
const isRoot = linux && libc().geteuid() === 0;
const PROBE = new URL("./peers/preview_probe.py", import.meta.url).pathname;

interface Probed {
  status: number;
  body: string;
}

/** Starts a test card and a preview of it; resolves with the printed URL's port and token. */
async function startPreview(
  name: string,
): Promise<{ card: Child; server: Child; port: number; token: string }> {
  const card = new Child(Deno.execPath(), [
    ...CLI_FLAGS,
    CLI,
    "testcard",
    name,
    "--width",
    "1280",
    "--height",
    "720",
  ]);
  await card.line(`testcard ${name}:`);
  const server = new Child(Deno.execPath(), [...CLI_FLAGS, CLI, "preview", name, "--port", "0"]);
  const url = new URL(/(http:\/\/\S+)/.exec(await server.line(/^preview: http/))![1]);
  return { card, server, port: Number(url.port), token: url.searchParams.get("token") ?? "" };
}

/** Runs the probe (as nobody if `asNobody`), returning what each request got. */
async function probe(
  port: number,
  requests: { path: string; headers: Record<string, string> }[],
  asNobody = false,
): Promise<Probed[]> {
  const args = [PROBE, String(port), "requests", JSON.stringify(requests)];
  await using child = asNobody
    ? new Child("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "/usr/bin/python3",
      ...args,
    ])
    : new Child("/usr/bin/python3", args);
  return JSON.parse(await child.line(/^\[/, 20000));
}

/** Headers a local process forges to look like the preview's own page. */
function forged(port: number, extra: Record<string, string> = {}): Record<string, string> {
  return { Host: `127.0.0.1:${port}`, Origin: `http://127.0.0.1:${port}`, ...extra };
}

const WS = {
  Upgrade: "websocket",
  Connection: "Upgrade",
  "Sec-WebSocket-Version": "13",
  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
};

Deno.test({
  name: "preview: another uid forging Host and Origin gets the same 403 everywhere, " +
    "no list, no frames" + (isRoot ? "" : " (ignored: needs root to run a client as nobody)"),
  ignore: !isRoot,
  async fn() {
    const name = uniqueName("pv-uid");
    const { card, server, port, token } = await startPreview(name);
    await using _card = card;
    await using _server = server;
    const wrong = token.slice(0, -1) + (token.endsWith("A") ? "B" : "A");
    const results = await probe(port, [
      { path: "/", headers: forged(port) },
      { path: "/api/list", headers: forged(port) },
      { path: `/ws?name=${name}`, headers: forged(port, WS) },
      { path: `/api/list?token=${wrong}`, headers: forged(port) },
      { path: "/api/list", headers: forged(port, { Cookie: `surfaceport-preview-${port}=` }) },
      { path: `/ws?name=${name}&token=`, headers: forged(port, WS) },
    ], true);
    for (const [i, result] of results.entries()) {
      assert.equal(result.status, 403, `request ${i}: ${JSON.stringify(result)}`);
      assert.equal(result.body, results[0].body, `request ${i} answers like the others`);
    }
    assert.doesNotMatch(results.map((r) => r.body).join("\n"), new RegExp(name));
    assert.match(token, /^[A-Za-z0-9_-]{43}$/, "a 256-bit token in the printed URL");
    // The owner, with the token, gets the list and a WebSocket.
    const owner = await probe(port, [
      { path: `/api/list?token=${token}`, headers: forged(port) },
      { path: `/ws?name=${name}&token=${token}`, headers: forged(port, WS) },
    ]);
    assert.equal(owner[0].status, 200);
    assert.match(owner[0].body, new RegExp(name));
    assert.equal(owner[1].status, 101);
  },
});

Deno.test({
  name: "preview: a name is answered without looking at the file system, and only names " +
    "list() shows are streamed",
  ignore: !linux,
  async fn() {
    const name = uniqueName("pv-name");
    const { card, server, port, token } = await startPreview(name);
    await using _card = card;
    await using _server = server;
    const existing = await Deno.makeTempFile();
    try {
      const results = await probe(
        port,
        [
          `/ws?name=${encodeURIComponent(existing)}&token=${token}`,
          `/ws?name=${encodeURIComponent(`${existing}-missing`)}&token=${token}`,
          `/ws?name=/etc/passwd&token=${token}`,
          `/ws?name=not-a-stream&token=${token}`,
        ].map((path) => ({ path, headers: forged(port, WS) })),
      );
      for (const result of results) assert.deepEqual(result, results[0]);
      assert.equal(results[0].status, 404);
    } finally {
      await Deno.remove(existing);
    }
  },
});

/** Resident memory of process `pid` in bytes (VmRSS), read through libc: Deno guards /proc. */
function residentBytes(pid: number): number {
  const lib = libc();
  const fd = lib.open(new TextEncoder().encode(`/proc/${pid}/status\0`), 0, 0);
  assert.ok(fd >= 0, `process ${pid} is gone`);
  try {
    const buffer = new Uint8Array(16384);
    const n = Number(lib.read(fd, buffer, BigInt(buffer.length)));
    const text = new TextDecoder().decode(buffer.subarray(0, Math.max(0, n)));
    return Number(/VmRSS:\s+(\d+) kB/.exec(text)![1]) * 1024;
  } finally {
    lib.close(fd);
  }
}

Deno.test({
  name: "preview: a page that asks for frames and never reads costs bounded memory",
  ignore: !linux,
  async fn() {
    const name = uniqueName("pv-greedy");
    const { card, server, port, token } = await startPreview(name);
    await using _card = card;
    await using _server = server;
    const pid = server.process.pid;
    await using greedy = new Child("/usr/bin/python3", [
      PROBE,
      String(port),
      "stall",
      `/ws?name=${name}&token=${token}`,
      JSON.stringify(forged(port)),
      "8",
    ]);
    assert.match(await greedy.line(/^HTTP/), /101/);
    await new Promise((resolve) => setTimeout(resolve, 2000)); // socket buffers fill up first
    const early = residentBytes(pid);
    await greedy.line(/^sent/, 20000);
    const late = residentBytes(pid);
    const grown = late - early;
    assert.ok(
      grown < 48 * 2 ** 20,
      `the preview grew ${(grown / 2 ** 20).toFixed(0)} MiB in 6 s for a page that never reads ` +
        `(${(early / 2 ** 20).toFixed(0)} -> ${(late / 2 ** 20).toFixed(0)} MiB)`,
    );
  },
});
