/**
 * {@link ReplicaStore} in a local directory: for development, demos, fast tests, and mounted volumes
 * (EFS, NFS) where S3 is not wanted.
 *
 * Layout, mirroring the S3 contract so a human can use it the same way:
 * - `DIR/KEY` is the current object, a plain SQLite file;
 * - `DIR/.db-sync-versions/KEY/<versionId>` holds every version ever put, with
 *   `<versionId>.json` beside it (metadata and time). Version ids sort by time.
 * Every write is temp → fsync → rename → fsync dir, so a crash never leaves a torn object.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, StorageError, throwIfAborted } from '../errors.js';
import { atomicCopyFile, atomicWriteFile, FILE_MODE, TEMP_MARKER } from '../fs-atomic.js';
import {
  PreconditionFailedError,
  type ConditionalStore,
  type DownloadOptions,
  type Downloaded,
  type GetResult,
  type ObjectInfo,
  type ObjectMetadata,
  type PutFromPreviousOptions,
  type PutFromPreviousResult,
  type PutOptions,
  type ReadOptions,
  type ReplicaStore,
  type SmallObject,
  type VersioningState,
  type WriteCondition,
} from './store.js';

const VERSIONS_DIR = '.db-sync-versions';
/** Read/write size of a download: 1 MiB keeps system calls few (as the S3 download does). */
const COPY_BUFFER_BYTES = 1024 * 1024;

/**
 * A conditional write holds a lock file beside the object for a few milliseconds. One older than this was
 * left by a process that died inside that window, and is removed.
 */
export const STALE_LOCK_MS = 10_000;
/** How long a conditional write waits for another one's lock before giving up (retryable). */
const LOCK_WAIT_MS = 5_000;

interface VersionRecord {
  readonly versionId: string;
  readonly sizeBytes: number;
  readonly lastModified: string;
  readonly metadata: ObjectMetadata;
}

let sequence = 0;

/** Time-ordered, unique version id: milliseconds, a per-process sequence, and randomness. */
function newVersionId(): string {
  sequence = (sequence + 1) % 1_000_000;
  return `${Date.now().toString().padStart(14, '0')}-${sequence.toString().padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

const etagOf = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export class DirStore implements ReplicaStore, ConditionalStore {
  readonly location: string;

  constructor(private readonly root: string) {
    this.location = root;
  }

  private objectPath(key: string): string {
    const parts = key.split('/');
    if (key === '' || parts.some((p) => p === '' || p === '.' || p === '..') || key.includes(VERSIONS_DIR)) {
      throw new StorageError(`invalid key "${key}" for a directory replica`, {
        retryable: false,
        code: 'InvalidKey',
        kind: 'Usage',
        hint: 'use a relative key without empty, "." or ".." segments',
      });
    }
    return join(this.root, ...parts);
  }

  private versionsDir(key: string): string {
    this.objectPath(key);
    return join(this.root, VERSIONS_DIR, ...key.split('/'));
  }

  private fail(error: unknown, operation: string, key: string): Error {
    if (error instanceof StorageError) return error;
    const code = (error as NodeJS.ErrnoException | undefined)?.code ?? 'Unknown';
    const message = `${operation} ${join(this.root, key)}: ${(error as Error).message}`;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new StorageError(message, {
        retryable: false,
        code,
        hint: `db-sync cannot write to ${this.root}; fix its permissions or DB_SYNC_REPLICA_DIR`,
      });
    }
    return new StorageError(message, {
      retryable: code === 'ENOSPC' || code === 'EIO' || code === 'EBUSY' || code === 'EAGAIN',
      code,
      kind: 'Failure',
      hint: code === 'ENOSPC' ? `the disk holding ${this.root} is full; free space` : undefined,
    });
  }

  private async readVersions(key: string): Promise<VersionRecord[]> {
    const dir = this.versionsDir(key);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if (isMissing(error)) return [];
      throw error;
    }
    const records: VersionRecord[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && !n.includes(TEMP_MARKER))) {
      try {
        records.push(JSON.parse(await readFile(join(dir, name), 'utf8')) as VersionRecord);
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    return records.sort((a, b) => (a.versionId < b.versionId ? 1 : -1));
  }

  private toInfo(key: string, record: VersionRecord, isLatest: boolean): ObjectInfo {
    return {
      key,
      versionId: record.versionId,
      sizeBytes: record.sizeBytes,
      lastModified: new Date(record.lastModified),
      isLatest,
      metadata: record.metadata,
    };
  }

  /** The info and file path of the current object or one version; null when absent. */
  private async locate(key: string, versionId: string | undefined): Promise<{ info: ObjectInfo; path: string } | null> {
    const versions = await this.readVersions(key);
    const current = await stat(this.objectPath(key)).catch((error: unknown) => {
      if (isMissing(error)) return null;
      throw error;
    });
    if (versionId !== undefined) {
      const record = versions.find((v) => v.versionId === versionId);
      if (!record) return null;
      const isLatest = current !== null && record === versions[0];
      return { info: this.toInfo(key, record, isLatest), path: join(this.versionsDir(key), record.versionId) };
    }
    if (!current) return null;
    const newest = versions[0];
    // The current file is the newest version unless someone replaced it by hand: then it has no metadata.
    const info: ObjectInfo =
      newest && newest.sizeBytes === current.size
        ? this.toInfo(key, newest, true)
        : { key, versionId: undefined, sizeBytes: current.size, lastModified: current.mtime, isLatest: true, metadata: {} };
    return { info, path: this.objectPath(key) };
  }

  async head(key: string, options: ReadOptions = {}): Promise<ObjectInfo | null> {
    throwIfAborted(options.signal, 'head');
    try {
      return (await this.locate(key, options.versionId))?.info ?? null;
    } catch (error) {
      throw this.fail(error, 'head', key);
    }
  }

  async get(key: string, options: ReadOptions = {}): Promise<GetResult | null> {
    throwIfAborted(options.signal, 'download');
    try {
      const found = await this.locate(key, options.versionId);
      if (!found) return null;
      return { info: found.info, body: createReadStream(found.path, { signal: options.signal }) };
    } catch (error) {
      throw this.fail(error, 'download', key);
    }
  }

  async put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    return this.store(key, sourcePath, options.metadata, options.signal, options.onProgress);
  }

  /**
   * Always a full put: a local copy costs the same disk writes as re-copying unchanged ranges would, so
   * there is nothing to save, and no block digests are kept.
   */
  async putFromPrevious(key: string, sourcePath: string, options: PutFromPreviousOptions): Promise<PutFromPreviousResult> {
    const info = await this.put(key, sourcePath, options);
    return { info, blocks: undefined, mode: 'full', sentBytes: info.sizeBytes, copiedBytes: 0 };
  }

  async download(key: string, path: string, options: DownloadOptions = {}): Promise<Downloaded | null> {
    throwIfAborted(options.signal, 'download');
    let destinationError: Error | undefined;
    try {
      const found = await this.locate(key, options.versionId);
      if (!found) return null;
      const hash = createHash('sha256');
      let received = 0;
      const counting = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          received += chunk.length;
          options.onProgress?.(received, found.info.sizeBytes);
          callback(null, chunk);
        },
      });
      const sink = createWriteStream(path, { mode: FILE_MODE, highWaterMark: COPY_BUFFER_BYTES });
      sink.once('error', (error) => {
        destinationError = error;
      });
      await pipeline(createReadStream(found.path, { highWaterMark: COPY_BUFFER_BYTES }), counting, sink, { signal: options.signal });
      return { info: found.info, sha256: hash.digest('hex'), sizeBytes: received };
    } catch (error) {
      if (options.signal?.aborted) throw new AbortedError('download aborted', error);
      // The caller's file failed (its disk, its permissions), not the replica: the caller reports a local error.
      if (error === destinationError) throw error;
      throw this.fail(error, 'download', key);
    }
  }

  private async store(
    key: string,
    sourcePath: string,
    metadata: ObjectMetadata,
    signal: AbortSignal | undefined,
    onProgress?: (sentBytes: number) => void,
  ): Promise<ObjectInfo> {
    throwIfAborted(signal, 'upload');
    try {
      const dir = this.versionsDir(key);
      await mkdir(dir, { recursive: true });
      const versionId = newVersionId();
      const versionPath = join(dir, versionId);
      await atomicCopyFile(sourcePath, versionPath);
      const { size } = await stat(versionPath);
      const record: VersionRecord = { versionId, sizeBytes: size, lastModified: new Date().toISOString(), metadata };
      throwIfAborted(signal, 'upload');
      // The record makes the version visible; the current file follows. A crash between the two leaves a
      // listed version whose current file is older, which a later put repairs.
      await atomicWriteFile(`${versionPath}.json`, JSON.stringify(record));
      await atomicCopyFile(versionPath, this.objectPath(key));
      onProgress?.(size);
      return this.toInfo(key, record, true);
    } catch (error) {
      throw this.fail(error, 'upload', key);
    }
  }

  async copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<ObjectInfo> {
    const found = await this.locate(sourceKey, sourceVersionId).catch((error: unknown) => {
      throw this.fail(error, 'copy', sourceKey);
    });
    if (!found) {
      throw new StorageError(`copy ${sourceKey}: source does not exist`, { retryable: false, code: 'NoSuchKey', kind: 'NotFound' });
    }
    return this.store(destinationKey, found.path, found.info.metadata, options.signal);
  }

  async list(prefix: string, options: { signal?: AbortSignal | undefined } = {}): Promise<ObjectInfo[]> {
    throwIfAborted(options.signal, 'list');
    const out: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if (isMissing(error)) return;
        throw error;
      }
      for (const entry of entries) {
        if (entry.name === VERSIONS_DIR || entry.name.includes(TEMP_MARKER)) continue;
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.isFile()) {
          const key = relative(this.root, path).split(sep).join('/');
          if (!key.startsWith(prefix)) continue;
          const s = await stat(path);
          out.push({ key, versionId: undefined, sizeBytes: s.size, lastModified: s.mtime, isLatest: true, metadata: {} });
        }
      }
    };
    try {
      await walk(prefix.includes('/') ? join(this.root, dirname(prefix)) : this.root);
    } catch (error) {
      throw this.fail(error, 'list', prefix);
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async listVersions(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<ObjectInfo[]> {
    throwIfAborted(options.signal, 'list versions');
    try {
      const versions = await this.readVersions(key);
      const current = await this.locate(key, undefined);
      return versions.map((v) => this.toInfo(key, v, current?.info.versionId === v.versionId));
    } catch (error) {
      throw this.fail(error, 'list versions of', key);
    }
  }

  /** Every put keeps the previous version under `.db-sync-versions/`: always versioned. */
  versioning(): Promise<VersioningState> {
    return Promise.resolve('enabled');
  }

  async delete(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    throwIfAborted(options.signal, 'delete');
    try {
      await rm(this.objectPath(key), { force: true });
    } catch (error) {
      throw this.fail(error, 'delete', key);
    }
  }

  async getBytes(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<SmallObject | null> {
    throwIfAborted(options.signal, 'read');
    try {
      const bytes = await readFile(this.objectPath(key));
      return { bytes, etag: etagOf(bytes) };
    } catch (error) {
      if (isMissing(error)) return null;
      throw this.fail(error, 'read', key);
    }
  }

  /**
   * Compare-and-swap under a lock file created with O_EXCL (`wx`): read, compare the sha256 etag, write
   * temp → fsync → rename, unlock. Exact between processes sharing the directory (and on NFS v3+, where
   * O_EXCL is atomic too). Small objects only: no version history, as S3's unversioned buckets.
   */
  async putBytes(
    key: string,
    bytes: Uint8Array,
    condition: WriteCondition,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<string> {
    throwIfAborted(options.signal, 'conditional write');
    const path = this.objectPath(key);
    try {
      await mkdir(dirname(path), { recursive: true });
      const unlock = await this.lock(path, options.signal);
      try {
        const current = await readFile(path).catch((error: unknown) => {
          if (isMissing(error)) return null;
          throw error;
        });
        const holds = 'ifNoneMatch' in condition ? current === null : current !== null && etagOf(current) === condition.ifMatch;
        if (!holds) {
          const what = 'ifNoneMatch' in condition ? 'create' : 'replace';
          throw new PreconditionFailedError(`${what} ${path}: the object changed (precondition failed)`);
        }
        await atomicWriteFile(path, bytes);
        return etagOf(bytes);
      } finally {
        await unlock();
      }
    } catch (error) {
      if (error instanceof AbortedError) throw error;
      throw this.fail(error, 'conditional write', key);
    }
  }

  /** Take the lock file beside `path`; resolves with the function that releases it. */
  private async lock(path: string, signal: AbortSignal | undefined): Promise<() => Promise<void>> {
    // TEMP_MARKER in the name keeps the lock out of list() results; the prefix keeps it out of the start-up
    // sweep of a database's temp files (leftovers.ts), should the replica share the database's directory.
    const lockPath = join(dirname(path), `.db-sync-lock-${basename(path)}${TEMP_MARKER}`);
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(lockPath, 'wx', 0o600);
        await handle.close();
        return () => rm(lockPath, { force: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const held = await stat(lockPath).catch(() => null);
      if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) {
        await rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new StorageError(`lock ${lockPath}: still held after ${LOCK_WAIT_MS} ms`, {
          retryable: true,
          code: 'LockBusy',
          kind: 'Failure',
          hint: `another process is writing ${path}; if none is, remove the lock file`,
        });
      }
      throwIfAborted(signal, 'conditional write');
      await sleep(5 + Math.random() * 20);
    }
  }

  close(): void {}
}
