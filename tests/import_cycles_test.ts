/**
 * The module graph of `src/` has no import circle (type-only imports
 * included): `deno info --json mod.ts`, then a depth-first search over every
 * module under `src/`.
 */

import assert from "node:assert/strict";

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Every import cycle among `src/` modules reachable from mod.ts, each as a path of files. */
async function sourceCycles(): Promise<string[][]> {
  const root = new URL("../", import.meta.url);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("mod.ts", root).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as { modules: InfoModule[] };
  const src = new URL("src/", root).href;
  const graph = new Map<string, string[]>();
  for (const module of info.modules) {
    if (!module.specifier.startsWith(src)) continue;
    const targets = (module.dependencies ?? [])
      .flatMap((d) => [d.code?.specifier, d.type?.specifier])
      .filter((s): s is string => s !== undefined && s.startsWith(src));
    graph.set(module.specifier, [...new Set(targets)]);
  }
  assert.ok(graph.size > 20, `expected the whole of src/ in the graph, got ${graph.size} files`);
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        cycles.push([...path.slice(path.indexOf(next)), next].map((s) => s.slice(src.length)));
      } else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return cycles;
}

Deno.test("layout: no import circle among the modules of src/", async () => {
  const cycles = await sourceCycles();
  assert.deepEqual(cycles, [], `import circles:\n${cycles.map((c) => c.join(" → ")).join("\n")}`);
});

Deno.test("layout: the platform-neutral contract and Surface import nothing from a backend", async () => {
  for (const file of ["backend.ts", "surface.ts"]) {
    const text = await Deno.readTextFile(new URL(`../src/${file}`, import.meta.url));
    const imports = [...text.matchAll(/from "([^"]+)"/g)].map((m) => m[1]);
    const platform = imports.filter((s) => /\/(darwin|linux)\//.test(s));
    // surface.ts names the PixelBuffer type in its public signatures, and nothing else.
    const allowed = file === "surface.ts" ? ["./darwin/pixel_buffer.ts"] : [];
    assert.deepEqual(platform.filter((s) => !allowed.includes(s)), [], `src/${file}: ${platform}`);
  }
});
