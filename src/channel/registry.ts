/**
 * The per-user registry behind `list()`: neither an abstract socket
 * namespace nor the macOS bootstrap server can be enumerated for one user's
 * names, so every `listen()` and `publish()` writes a small JSON file into
 * a directory of its user's and removes it on close.
 *
 * The directory: `$XDG_RUNTIME_DIR/surfaceport` when `XDG_RUNTIME_DIR` is
 * set (and readable with `--allow-env`) and is what the system makes it — a
 * directory of this user's that nobody else may enter (mode 0700) — else
 * `/tmp/surfaceport-UID` (the same path on Linux and macOS). `list()` reads
 * both, so a process with the variable and one without (a cron job, `sudo
 * -u`, CI) still see each other. Either directory must be owned by the user
 * with no access for anyone else, or it is ignored: another user can create
 * `/tmp/surfaceport-UID` first, and then this user simply has no registry.
 *
 * Entries are opened with `O_NOFOLLOW | O_NONBLOCK` (and created with
 * `O_CREAT | O_EXCL`), must be regular files of this user, and are read up to
 * {@link MAX_ENTRY_BYTES}: a link, a FIFO, a huge or unparseable file costs
 * nothing and, being in this user's own directory, is removed.
 *
 * A process that dies without closing leaves its file behind; `list()`
 * shows an entry only while the backend judges it live: on Linux the process
 * `pid` exists and holds a descriptor of a listening socket bound at the
 * entry's `address`, which is the address of its `name` (a reused pid, or
 * an entry that names a live endpoint of another process, is not live); on
 * macOS the process `pid` exists (`kill(pid, 0)`) and the bootstrap name
 * resolves (an entry whose process is gone is dead, whoever holds its name
 * now). An entry judged dead is deleted; one that cannot be judged (macOS: a
 * name that does not resolve from this bootstrap namespace while its
 * process still exists, as from an ssh session for the GUI login's names)
 * is neither listed nor deleted.
 *
 * Everything here is best effort and never prompts: a process without
 * `--allow-read` and `--allow-write` for the directory does not register
 * (its endpoints work, `list()` elsewhere does not show them).
 *
 * @module
 */

import type { EndpointState } from "../contract/backend.ts";
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

/** The most bytes of an entry that are read: a real one is a few hundred. */
export const MAX_ENTRY_BYTES = 4096;

let testDirectory: { path: string; uid: number } | undefined;

/** Test hook: use `path` (owned by `uid`) as the registry directory; `undefined` restores the default. */
export function setRegistryForTesting(directory: { path: string; uid: number } | undefined): void {
  testDirectory = directory;
}

function granted(kind: "read" | "write", path: string): boolean {
  return files.mayAccess(kind, path);
}

/** `$XDG_RUNTIME_DIR` if it may be read (never prompting) and is an absolute path. */
function runtimeDirectory(): string | undefined {
  const value = runtime.env("XDG_RUNTIME_DIR");
  return value?.startsWith("/") ? value : undefined;
}

/** The registry directories in order of preference: where to write first, all of them to read. */
function directories(): { path: string; uid: number; parent?: string }[] {
  if (testDirectory) return [testDirectory];
  const uid = backend().currentUid();
  const result: { path: string; uid: number; parent?: string }[] = [];
  const runtime = runtimeDirectory();
  if (runtime) result.push({ path: `${runtime}/surfaceport`, uid, parent: runtime });
  result.push({ path: `/tmp/surfaceport-${uid}`, uid });
  return result;
}

/** True if `path` is a real directory of `uid` that nobody else may use. */
function privateDirectory(path: string, uid: number): boolean {
  const info = files.lstat(path);
  return info.isDirectory && info.uid === uid && (info.mode & 0o077) === 0;
}

/**
 * A registry directory if it is usable: ours (owner = this user), a real
 * directory, no access for anyone else (and, under `XDG_RUNTIME_DIR`, that
 * directory the same). Anything else in its place is ignored rather than
 * trusted.
 */
function usableDirectory(
  candidate: { path: string; uid: number; parent?: string },
  create: boolean,
): string | undefined {
  const { path, uid, parent } = candidate;
  if (!granted("read", path) || (create && !granted("write", path))) return undefined;
  try {
    if (parent !== undefined && !privateDirectory(parent, uid)) return undefined;
    let created = false;
    if (create) created = files.makeDirectory(path, 0o700);
    if (!privateDirectory(path, uid)) {
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

/**
 * Writes `text` to `file` whole, through a fresh `file.tmp` renamed over it:
 * a reader never sees half an entry. The temporary file is created with
 * `O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK`, so nothing that was already
 * at its name — a link to another file, a hard link, a FIFO — is written
 * through or waited on: it is removed (the directory is this user's alone)
 * and the file created afresh.
 */
function writeEntry(file: string, text: string): void {
  const temporary = `${file}.tmp`;
  if (!files.createFile(temporary, text, 0o600)) {
    files.remove(temporary); // removes the name, never what a link points to
    if (!files.createFile(temporary, text, 0o600)) return;
  }
  files.rename(temporary, file);
}

/** Enters an endpoint; `undefined` if the registry is not usable here. */
export function register(
  kind: EndpointInfo["kind"],
  name: string,
  address: string,
  subscribers?: number,
): Registration | undefined {
  let dir: string | undefined;
  for (const candidate of directories()) {
    dir = usableDirectory(candidate, true);
    if (dir) break;
  }
  if (!dir) return undefined;
  const pid = backend().currentPid();
  const file = `${dir}/${fileName(pid, name)}`;
  let removed = false;
  const write = (count: number | undefined) => {
    if (removed) return;
    const entry: EndpointInfo = { name, kind, pid, address };
    if (count !== undefined) entry.subscribers = count;
    try {
      writeEntry(file, JSON.stringify(entry));
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
    const modified = files.lstat(file).mtimeMs;
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

const decoder = new TextDecoder();

/**
 * Reads the entry at `file`: its endpoint, `"gone"` if it was removed
 * meanwhile, or `"bad"` for anything that is not a regular file of `uid`
 * with one link holding a well-formed entry of at most
 * {@link MAX_ENTRY_BYTES} (a link, a FIFO — opened without waiting, never
 * read —, a hard link, another user's file, a huge or unparseable one).
 * Never follows a link, never blocks.
 */
function readEntry(file: string, uid: number): EndpointInfo | "gone" | "bad" {
  try {
    const read = files.readBounded(file, MAX_ENTRY_BYTES);
    if (!read) return "gone";
    const { info, bytes } = read;
    if (!info.isFile || info.uid !== uid || info.links !== 1 || !bytes) return "bad";
    if (bytes.length > MAX_ENTRY_BYTES) return "bad";
    return parse(decoder.decode(bytes)) ?? "bad";
  } catch {
    return "bad";
  }
}

/** Removes `file` from `dir` if this process may write there: it is not (or no longer) an endpoint. */
function removeEntry(file: string, dir: string): void {
  if (!granted("write", dir)) return;
  try {
    files.remove(file); // unlink: a link is removed, never what it points to
  } catch {
    // someone else removed it
  }
}

/**
 * The live listeners (`listen`) and publishers (`publish`) of this user on
 * this machine, sorted by name: `{ name, kind, pid, subscribers?, address }`.
 * Endpoints of processes that died are left out (and their entries
 * deleted, with any half-written entry a killed process left over a minute
 * ago, and any entry that is not a well-formed file of this user's), even if
 * their pid was reused. `subscribers` is the count at the publisher's last
 * change.
 *
 * Needs `--allow-read` for the registry directories (`/tmp/surfaceport-UID`,
 * and `$XDG_RUNTIME_DIR/surfaceport` with `--allow-env`) and `--allow-write`
 * for them to delete stale entries; without read permission it resolves to
 * `[]`. Endpoints of processes without `--allow-read` and `--allow-write` for
 * a directory are not registered and not listed.
 */
export function list(): Promise<EndpointInfo[]> {
  try {
    // Read the entries before judging them: an entry is written after its name is bound.
    const entries: { entry: EndpointInfo; file: string; dir: string }[] = [];
    for (const candidate of directories()) {
      const dir = usableDirectory(candidate, false);
      if (!dir) continue;
      for (const item of files.readDirectory(dir)) {
        const file = `${dir}/${item.name}`;
        if (item.name.endsWith(".json.tmp")) {
          removeIfAbandoned(file, dir);
          continue;
        }
        if (!item.name.endsWith(".json")) continue;
        const entry = readEntry(file, candidate.uid);
        if (entry === "gone") continue;
        if (entry === "bad") removeEntry(file, dir);
        else entries.push({ entry, file, dir });
      }
    }
    const states: EndpointState[] = backend().endpointStates(entries.map(({ entry }) => entry));
    const self = backend().currentPid();
    const result: EndpointInfo[] = [];
    entries.forEach(({ entry, file, dir }, i) => {
      if (states[i] === "live") result.push(entry);
      else if (states[i] === "dead" && entry.pid !== self) removeEntry(file, dir);
    });
    result.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : a.pid - b.pid);
    return Promise.resolve(result);
  } catch (error) {
    return Promise.reject(error);
  }
}
