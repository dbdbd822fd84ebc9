/**
 * The per-user registry behind `list()`: neither an abstract socket
 * namespace nor the macOS bootstrap server can be enumerated for one user's
 * names, so every `listen()` and `publish()` writes a small JSON file into
 * `/tmp/surfaceport-UID/` (mode 0700, owned by the user; the same path on
 * Linux and macOS) and removes it on close.
 *
 * A process that dies without closing leaves its file behind; `list()`
 * shows an entry only while its endpoint is live, as the backend checks it
 * (Linux: the process exists AND a listening socket is bound under the name
 * in `/proc/net/unix` — a reused pid alone is not enough; macOS: the
 * bootstrap name still resolves, and it dies with its owner). Entries that
 * are not live are deleted by `list()`.
 *
 * Everything here is best effort and never prompts: a process without
 * `--allow-read` and `--allow-write` for the directory does not register
 * (its endpoints work, `list()` elsewhere does not show them).
 *
 * @module
 */

import { backend } from "../platform.ts";
import { runtime } from "../../ffi/runtime.ts";

const files = runtime.files;

/** What `list()` reports for one live endpoint. */
export interface EndpointInfo {
  /** The name it was bound under (as passed to `listen` / `publish`). */
  name: string;
  /** `"channel"` for `listen()`, `"publisher"` for `publish()`. */
  kind: "channel" | "publisher";
  /** The process that bound it. */
  pid: number;
  /** Publishers only: how many subscribers it had at its last change. */
  subscribers?: number;
  /** The bound address: `@surfaceport/NAME`, a socket path, or the bootstrap service name. */
  address: string;
}

/** One endpoint's entry, removed by {@link Registration.remove}. */
export interface Registration {
  /** Rewrites the subscriber count (publishers). */
  update(subscribers: number): void;
  /** Deletes the entry. Idempotent. */
  remove(): void;
}

let testDirectory: { path: string; uid: number } | undefined;

/** Test hook: use `path` (owned by `uid`) as the registry directory; `undefined` restores the default. */
export function setRegistryForTesting(directory: { path: string; uid: number } | undefined): void {
  testDirectory = directory;
}

function directory(): { path: string; uid: number } {
  if (testDirectory) return testDirectory;
  const uid = backend().currentUid();
  return { path: `/tmp/surfaceport-${uid}`, uid };
}

function granted(kind: "read" | "write", path: string): boolean {
  return runtime.files.mayAccess(kind, path);
}

/**
 * The registry directory if it is usable: ours (owner = this user), a real
 * directory, no access for anyone else. Anything else in its place is
 * ignored rather than trusted.
 */
function usableDirectory(create: boolean): string | undefined {
  const { path, uid } = directory();
  if (!granted("read", path) || (create && !granted("write", path))) return undefined;
  try {
    let created = false;
    if (create) {
      created = files.makeDirectory(path, 0o700);
    }
    const info = files.lstat(path);
    if (!info.isDirectory || info.uid !== uid || (info.mode & 0o077) !== 0) {
      // Made just now for a uid this process does not run as (a test double's backend):
      // never leave a directory that would lock that user out of their registry.
      if (created) files.remove(path);
      return undefined;
    }
    return path;
  } catch {
    return undefined;
  }
}

/** A file name for `name` of this process: readable, and never longer than a file name may be. */
function fileName(pid: number, name: string): string {
  let encoded = encodeURIComponent(name).replaceAll(".", "%2E");
  if (encoded.length > 180) {
    let hash = 0x811c9dc5; // FNV-1a: only to keep long names apart
    for (let i = 0; i < name.length; i++) {
      hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0;
    }
    encoded = `${encoded.slice(0, 160)}~${hash.toString(16)}`;
  }
  return `${pid}-${encoded}.json`;
}

/** Enters an endpoint; `undefined` if the registry is not usable here. */
export function register(
  kind: EndpointInfo["kind"],
  name: string,
  address: string,
  subscribers?: number,
): Registration | undefined {
  const dir = usableDirectory(true);
  if (!dir) return undefined;
  const file = `${dir}/${fileName(runtime.pid, name)}`;
  let removed = false;
  const write = (count: number | undefined) => {
    if (removed) return;
    const entry: EndpointInfo = { name, kind, pid: runtime.pid, address };
    if (count !== undefined) entry.subscribers = count;
    try {
      // Written whole, then renamed: a reader never sees half an entry.
      files.writeTextFile(`${file}.tmp`, JSON.stringify(entry), 0o600);
      files.rename(`${file}.tmp`, file);
    } catch {
      // best effort
    }
  };
  write(subscribers);
  return {
    update: (count) => write(count),
    remove() {
      if (removed) return;
      removed = true;
      try {
        files.remove(file);
      } catch {
        // already gone
      }
    },
  };
}

/** How old a `.json.tmp` must be to count as abandoned: a writer renames its own at once. */
const ABANDONED_TMP_MS = 60_000;

/**
 * Removes an entry's temporary file left by a process killed between
 * writing and renaming it (nothing else ever would), once it is clearly
 * not being written any more.
 */
function removeIfAbandoned(file: string, dir: string): void {
  try {
    const modified = files.stat(file).mtimeMs;
    if (modified === undefined || Date.now() - modified < ABANDONED_TMP_MS) return;
    if (granted("write", dir)) files.remove(file);
  } catch {
    // renamed or removed meanwhile
  }
}

function parse(text: string): EndpointInfo | undefined {
  try {
    const value = JSON.parse(text);
    if (
      typeof value?.name !== "string" || (value.kind !== "channel" && value.kind !== "publisher") ||
      !Number.isSafeInteger(value.pid) || typeof value.address !== "string"
    ) return undefined;
    const entry: EndpointInfo = {
      name: value.name,
      kind: value.kind,
      pid: value.pid,
      address: value.address,
    };
    if (value.kind === "publisher") {
      entry.subscribers = Number.isSafeInteger(value.subscribers) ? value.subscribers : 0;
    }
    return entry;
  } catch {
    return undefined;
  }
}

/**
 * The live listeners (`listen`) and publishers (`publish`) of this user on
 * this machine, sorted by name: `{ name, kind, pid, subscribers?, address }`.
 * Endpoints of processes that died are left out (and their entries
 * deleted, with any half-written entry a killed process left over a minute
 * ago), even if their pid was reused. `subscribers` is the count at the
 * publisher's last change.
 *
 * Needs `--allow-read` for the registry directory `/tmp/surfaceport-UID`
 * (and, on Linux, for `/proc`, to check that each endpoint is live) and
 * `--allow-write` for it to delete stale entries; without read permission it
 * resolves to `[]`. Endpoints of processes without `--allow-read` and
 * `--allow-write` for that directory are not registered and not listed.
 */
export function list(): Promise<EndpointInfo[]> {
  try {
    const dir = usableDirectory(false);
    if (!dir) return Promise.resolve([]);
    // Read the entries before checking liveness: an entry is written after its name is bound.
    const entries: { entry: EndpointInfo; file: string }[] = [];
    for (const item of files.readDirectory(dir)) {
      if (item.isFile && item.name.endsWith(".json.tmp")) {
        removeIfAbandoned(`${dir}/${item.name}`, dir);
        continue;
      }
      if (!item.isFile || !item.name.endsWith(".json")) continue;
      let text: string;
      try {
        text = files.readTextFile(`${dir}/${item.name}`);
      } catch {
        continue; // removed meanwhile
      }
      const entry = parse(text);
      if (entry) entries.push({ entry, file: `${dir}/${item.name}` });
    }
    const live = backend().endpointsLive(entries.map(({ entry }) => entry));
    const result: EndpointInfo[] = [];
    entries.forEach(({ entry, file }, i) => {
      if (live[i]) {
        result.push(entry);
      } else if (entry.pid !== runtime.pid && granted("write", dir)) {
        try {
          files.remove(file); // its process is gone or no longer listens under that name
        } catch {
          // someone else removed it
        }
      }
    });
    result.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : a.pid - b.pid);
    return Promise.resolve(result);
  } catch (error) {
    return Promise.reject(error);
  }
}
