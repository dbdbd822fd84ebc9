/**
 * Processes on different runtimes exchange frames through the same wire,
 * every byte of every frame checked by the receiver: a Node publisher and a
 * Deno subscriber, a Deno publisher and a Bun subscriber, a Bun producer
 * and a Node listener (channel); and `list()` in each runtime shows the
 * endpoints of the others.
 */

import assert from "node:assert/strict";
import { list } from "../mod.ts";
import { uniqueName } from "./helpers.ts";
import { missing, type RuntimeBinary, runtimes, spawnPeer } from "./runtimes.ts";

const FRAMES = 12;

/** Why a pair cannot run, for the test's name. */
function absent(...names: ("deno" | "node" | "bun")[]): string | undefined {
  for (const name of names) {
    if (name !== "deno" && missing(name)) return missing(name);
  }
  return undefined;
}

/** `sender` (publish or produce) and `receiver` (subscribe or listen) over one name. */
async function exchange(
  sender: RuntimeBinary,
  senderMode: "publish" | "produce",
  receiver: RuntimeBinary,
  receiverMode: "subscribe" | "listen",
  format: "BGRA" | "NV12",
): Promise<void> {
  const name = uniqueName(`interop-${sender.name}-${receiver.name}`);
  // The side that binds the name starts first.
  const first = senderMode === "publish"
    ? spawnPeer(sender, [senderMode, name, String(FRAMES), format])
    : spawnPeer(receiver, [receiverMode, name, String(FRAMES)]);
  await using _first = first;
  await first.line("ready");
  const second = senderMode === "publish"
    ? spawnPeer(receiver, [receiverMode, name, String(FRAMES)])
    : spawnPeer(sender, [senderMode, name, String(FRAMES), format]);
  await using _second = second;
  const receiving = senderMode === "publish" ? second : first;
  const size = format === "NV12" ? "320x240 420v" : "320x240 BGRA";
  for (let seed = 0; seed < FRAMES; seed++) {
    assert.equal(await receiving.line(/^(ok|bad)/), `ok ${seed} ${size} ${receiver.name}`);
  }
  await receiving.line("done");
  assert.equal((await first.exit()).code, 0, first.stderr);
  assert.equal((await second.exit()).code, 0, second.stderr);
}

const pairs = [
  ["node", "publish", "deno", "subscribe", "NV12"],
  ["deno", "publish", "bun", "subscribe", "BGRA"],
  ["bun", "produce", "node", "listen", "NV12"],
  ["node", "produce", "bun", "listen", "BGRA"],
] as const;

for (const [from, senderMode, to, receiverMode, format] of pairs) {
  const reason = absent(from, to);
  Deno.test({
    name: `interop: a ${from} ${senderMode === "publish" ? "publisher" : "producer"} and a ${to} ${
      receiverMode === "subscribe" ? "subscriber" : "listener"
    } exchange ${FRAMES} ${format} frames, every byte checked${
      reason ? ` (ignored: ${reason})` : ""
    }`,
    ignore: reason !== undefined,
    fn: () => exchange(runtimes[from]!, senderMode, runtimes[to]!, receiverMode, format),
  });
}

const listReason = absent("node", "bun");
Deno.test({
  name: `interop: list() in Deno, Node and Bun shows the endpoints of the others${
    listReason ? ` (ignored: ${listReason})` : ""
  }`,
  ignore: listReason !== undefined,
  async fn() {
    const onNode = uniqueName("held-by-node");
    const onBun = uniqueName("held-by-bun");
    await using node = spawnPeer(runtimes.node!, ["hold", onNode]);
    await using bun = spawnPeer(runtimes.bun!, ["hold", onBun]);
    await node.line("ready");
    await bun.line("ready");
    const names = (entries: { name: string; pid: number }[]) => entries.map((e) => e.name);
    const inDeno = names(await list());
    assert.ok(inDeno.includes(onNode) && inDeno.includes(onBun), `Deno's list(): ${inDeno}`);
    for (const [runtime, other] of [["node", onBun], ["bun", onNode]] as const) {
      await using lister = spawnPeer(runtimes[runtime]!, ["list"]);
      const entries = JSON.parse(await lister.line(/^\[/)) as { name: string; pid: number }[];
      const entry = entries.find((e) => e.name === other);
      assert.ok(entry, `${runtime}'s list() shows ${other}: ${names(entries)}`);
      const holder = other === onBun ? bun : node;
      assert.equal(entry.pid, holder.process.pid);
    }
  },
});
