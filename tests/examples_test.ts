/**
 * The README's Use snippets are files under examples/ (the README shows each
 * file verbatim, starting with its run command), and they run as written:
 * the consumer prints frames, and the producer ends cleanly when the
 * consumer goes away.
 */
import assert from "node:assert/strict";
import { Child, uniqueName } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;
const readme = Deno.readTextFileSync(`${root}README.md`);

/** The ```ts blocks of the README's "## Use" section. */
function useSnippets(): string[] {
  const start = readme.indexOf("\n## Use\n");
  assert.ok(start >= 0, "README has a ## Use section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

/** `// examples/NAME.ts — run: COMMAND` on a snippet's first line. */
const HEADER = /^\/\/ (examples\/[\w-]+\.ts) — run: (deno run [^\n]+)\n/;

Deno.test("README: every Use snippet is an examples/ file, verbatim, with its run command", () => {
  const snippets = useSnippets();
  assert.ok(snippets.length >= 2, "the Use section has snippets");
  for (const snippet of snippets) {
    const header = HEADER.exec(snippet);
    assert.ok(header, `snippet without an '// examples/X.ts — run: ...' line:\n${snippet}`);
    const file = Deno.readTextFileSync(`${root}${header[1]}`);
    assert.equal(snippet, file, `README's snippet differs from ${header[1]}`);
    assert.match(header[2], new RegExp(`^deno run (--allow-\\w+ )+${header[1]}( \\w+)?$`));
  }
});

Deno.test("README: says how to get Deno (install script and npm)", () => {
  assert.match(readme, /curl -fsSL https:\/\/deno\.land\/install\.sh \| sh/);
  assert.match(readme, /npm install deno/);
});

/** The run command of `file` from its header, with the stream name replaced. */
function runCommand(file: string, name: string): string[] {
  const header = HEADER.exec(Deno.readTextFileSync(`${root}${file}`))!;
  const words = header[2].split(" ");
  assert.equal(words.at(-1), "camera");
  return [...words.slice(1, -1), name];
}

Deno.test({
  name:
    "examples: the Use snippets run as written; the producer ends cleanly when the consumer goes",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const name = uniqueName("use");
    const inRoot = (args: string[]) =>
      args.map((a) => a.startsWith("examples/") ? `${root}${a}` : a);
    await using consumer = new Child(
      Deno.execPath(),
      inRoot(runCommand("examples/use_consumer.ts", name)),
    );
    // The producer's connect() waits up to 5 s for the consumer's name to appear.
    await using producer = new Child(
      Deno.execPath(),
      inRoot(runCommand("examples/use_producer.ts", name)),
    );
    for (let i = 0; i < 3; i++) {
      assert.match(await consumer.line(/^\d+ /), new RegExp(`^${i} \\{ pts: ${i} \\} ${i}$`));
    }
    consumer.process.kill("SIGKILL");
    await producer.line("the consumer went away");
    const status = await producer.exit();
    assert.equal(status.code, 0, producer.stderr);
    assert.doesNotMatch(producer.stderr, /Uncaught|PeerClosedError/);
  },
});
