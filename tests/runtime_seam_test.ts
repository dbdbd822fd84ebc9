/**
 * Nothing in `src/` reaches the host runtime except through the seam in
 * `ffi/runtime.ts`: no `Deno.*` (values or types), no `node:ffi`, no
 * `bun:ffi`, in code (comments may name them). In `ffi/`, only the runtime
 * implementations touch `Deno.*`; the symbol tables keep their
 * `satisfies Deno.ForeignLibraryInterface` (a type check, erased on Node and Bun).
 */

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of Deno.readDirSync(new URL(dir, root))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts")) files.push(path);
  }
  return files;
}

/** The code of a file: block and line comments blanked (line numbers kept). */
function codeOf(path: string): string[] {
  const text = Deno.readTextFileSync(new URL(path, root))
    .replace(/\/\*[\s\S]*?\*\//g, (comment) => comment.replace(/[^\n]/g, " "))
    .replace(/(^|[\s;,{}()])\/\/.*$/gm, "$1");
  return text.split("\n");
}

/** Each use of the host runtime in `path`'s code as `path:line: text`, minus what `allowed` permits. */
function hostUses(path: string, allowed: (line: string) => boolean = () => false): string[] {
  const found: string[] = [];
  codeOf(path).forEach((line, i) => {
    const code = line.replaceAll('Symbol.for("Deno.customInspect")', "");
    if (allowed(code)) return;
    if (/\bDeno\s*(\.|\?\.|\[)|globalThis\.Deno|["'](node|bun):ffi["']/.test(code)) {
      found.push(`${path}:${i + 1}: ${line.trim()}`);
    }
  });
  return found;
}

Deno.test("runtime seam: nothing in src/ touches Deno.*, node:ffi or bun:ffi", () => {
  const files = sourceFiles("src");
  assert.ok(files.length > 40, `expected all of src/, found ${files.length} files`);
  const uses = files.flatMap((path) => hostUses(path));
  assert.deepEqual(uses, [], `host runtime used outside ffi/runtime*.ts:\n${uses.join("\n")}`);
});

Deno.test("runtime seam: in ffi/, only the runtime detection and implementations touch the host", () => {
  const uses = sourceFiles("ffi")
    .filter((path) => !/^ffi\/runtime(_\w+)?\.ts$/.test(path))
    .flatMap((path) =>
      hostUses(path, (line) => /^\} as const satisfies Deno\.ForeignLibraryInterface;$/.test(line))
    );
  assert.deepEqual(uses, [], `host runtime used outside ffi/runtime*.ts:\n${uses.join("\n")}`);
});

Deno.test("runtime seam: the check finds a use of Deno.* in code and not in a comment", () => {
  const dir = Deno.makeTempDirSync({ dir: new URL("src", root).pathname });
  const name = dir.slice(dir.lastIndexOf("/") + 1);
  try {
    Deno.writeTextFileSync(
      `${dir}/probe.ts`,
      [
        "// Deno.pid in a comment",
        "/** Deno.build.os in JSDoc */",
        'const key = Symbol.for("Deno.customInspect");',
        "export const pid: number = Deno.pid;",
        "export type P = Deno.PointerObject;",
        'const ffi = await import("node:ffi");',
      ].join("\n"),
    );
    assert.deepEqual(hostUses(`src/${name}/probe.ts`).map((use) => use.split(":")[1]), [
      "4",
      "5",
      "6",
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
