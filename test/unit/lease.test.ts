/**
 * The lease logic, driven step by step against an in-memory store with exact compare-and-swap semantics
 * and a hand-moved monotonic clock: no real waiting, no timing assertions. The sidecar cases at the end
 * run two sidecars on one DirStore, as two tasks on one key.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ecsTaskFromMetadataUri,
  FencedStore,
  Lease,
  LeaseLapsedError,
  LeaseLostError,
  parseLeaseRecord,
  type LeaseOptions,
} from '../../src/core/lease.js';
import { Sidecar } from '../../src/core/sidecar.js';
import { DEFAULT_LEASE_TTL_MS, loadConfig } from '../../src/config.js';
import { AbortedError, StorageError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import {
  PreconditionFailedError,
  type ConditionalStore,
  type Downloaded,
  type GetResult,
  type ObjectInfo,
  type PutFromPreviousResult,
  type PutOptions,
  type ReplicaStore,
  type SmallObject,
  type WriteCondition,
} from '../../src/replica/store.js';
import { addRows, createDatabase, rowCount, tempDir } from '../helpers/db.js';

const KEY = 'db.sqlite3.lease';
const log = silentLogger();
const TTL = 30_000;

const etagOf = (bytes: Uint8Array): string => createHash('md5').update(bytes).digest('hex');

/** Small objects in a Map, with exactly the CAS semantics of the contract; failures can be injected. */
class MemoryCasStore implements ConditionalStore {
  readonly objects = new Map<string, Buffer>();
  writes = 0;
  /** The next conditional writes throw this instead of writing. */
  failWrites: Error | undefined;
  /** The next conditional write is applied, then reported as this error (an SDK retry meeting its own write). */
  failAfterWrite: Error | undefined;

  getBytes(key: string): Promise<SmallObject | null> {
    const bytes = this.objects.get(key);
    return Promise.resolve(bytes ? { bytes, etag: etagOf(bytes) } : null);
  }

  /** Check and write with no await in between: atomic, as compare-and-swap must be. */
  putBytes(key: string, bytes: Uint8Array, condition: WriteCondition): Promise<string> {
    if (this.failWrites) return Promise.reject(this.failWrites);
    const current = this.objects.get(key);
    const holds = 'ifNoneMatch' in condition ? current === undefined : current !== undefined && etagOf(current) === condition.ifMatch;
    if (!holds) return Promise.reject(new PreconditionFailedError(`write ${key}: precondition failed`));
    this.writes += 1;
    this.objects.set(key, Buffer.from(bytes));
    const after = this.failAfterWrite;
    this.failAfterWrite = undefined;
    return after ? Promise.reject(after) : Promise.resolve(etagOf(bytes));
  }
}

/** A monotonic clock moved by hand. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function lease(store: ConditionalStore, clock: { now: () => number }, extra: Partial<LeaseOptions> = {}): Lease {
  return new Lease({
    store,
    key: KEY,
    location: 'memory',
    ttlMs: TTL,
    holder: { host: 'host-a', toolVersion: '0.0.0-test', pid: 42, task: 'task-1' },
    log,
    now: clock.now,
    ...extra,
  });
}

const leases: Lease[] = [];
afterEach(() => {
  for (const l of leases.splice(0)) l.stop();
  vi.useRealTimers();
});
function track(l: Lease): Lease {
  leases.push(l);
  return l;
}

describe('Lease', () => {
  it('creates the lease object when absent, naming its holder', async () => {
    const store = new MemoryCasStore();
    const a = track(lease(store, manualClock()));
    expect(await a.tryAcquire()).toEqual({ acquired: true, previous: undefined, how: 'created' });
    expect(a.state).toBe('held');
    const record = parseLeaseRecord(store.objects.get(KEY) ?? Buffer.alloc(0));
    expect(record).toMatchObject({ owner: a.owner, host: 'host-a', pid: 42, task: 'task-1', ttlMs: TTL, toolVersion: '0.0.0-test' });
    expect(Date.parse(record?.expiresAt ?? '') - Date.parse(record?.renewedAt ?? '')).toBe(TTL);
  });

  it('makes a second owner wait while the first renews, and names the holder', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock, { holder: { host: 'host-b', toolVersion: '0' } }));
    await a.tryAcquire();

    const first = await b.tryAcquire();
    expect(first).toMatchObject({ acquired: false, holder: { owner: a.owner, host: 'host-a' } });
    // A keeps renewing more often than the TTL: however long B waits, the lease is never expired.
    for (let i = 0; i < 10; i += 1) {
      clock.advance(TTL / 2);
      await a.renew();
      expect((await b.tryAcquire()).acquired).toBe(false);
    }
    expect(a.state).toBe('held');
  });

  it('takes over a lease whose owner stopped renewing once it has seen no change for the TTL', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    expect((await b.tryAcquire()).acquired).toBe(false); // B starts its observation now
    clock.advance(TTL - 1);
    expect((await b.tryAcquire()).acquired).toBe(false);
    clock.advance(1);
    const attempt = await b.tryAcquire();
    expect(attempt).toMatchObject({ acquired: true, how: 'expired', previous: { owner: a.owner } });
    expect(parseLeaseRecord(store.objects.get(KEY) ?? Buffer.alloc(0))?.owner).toBe(b.owner);
  });

  it('judges expiry by its own clock, not by the expiresAt an owner with a skewed clock wrote', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    // A's wall clock is an hour behind: its expiresAt is long past by anyone else's clock.
    const a = track(lease(store, clock, { wallNow: () => Date.now() - 3_600_000 }));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    expect((await b.tryAcquire()).acquired).toBe(false);
  });

  it('hands the lease over at once on release', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    expect((await b.tryAcquire()).acquired).toBe(false);
    await a.release();
    expect(a.state).toBe('released');
    expect(parseLeaseRecord(store.objects.get(KEY) ?? Buffer.alloc(0))?.released).toBe(true);
    expect(await b.tryAcquire()).toMatchObject({ acquired: true, how: 'released' });
  });

  it('lets exactly one of two waiters take over an expired lease', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    await a.tryAcquire();
    const waiters = [track(lease(store, clock)), track(lease(store, clock))];
    for (const w of waiters) await w.tryAcquire();
    clock.advance(TTL);
    const attempts = await Promise.all(waiters.map((w) => w.tryAcquire()));
    expect(attempts.filter((x) => x.acquired)).toHaveLength(1);
  });

  it('takes over an unreadable lease object', async () => {
    const store = new MemoryCasStore();
    store.objects.set(KEY, Buffer.from('not json'));
    const a = track(lease(store, manualClock()));
    expect(await a.tryAcquire()).toMatchObject({ acquired: true, how: 'unreadable' });
  });

  it('fences: once another owner has taken over, the old one cannot renew, and its writes never reach the store', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    const lost: Error[] = [];
    a.onLost((error) => lost.push(error));
    // A is paused (SIGSTOP) for longer than the TTL; B takes over meanwhile.
    await b.tryAcquire();
    clock.advance(TTL);
    expect((await b.tryAcquire()).acquired).toBe(true);

    const data = new RecordingStore();
    const fenced = new FencedStore(data, () => a);
    const error = await fenced.put('db.sqlite3', '/nonexistent', { metadata: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as LeaseLostError).exitCode).toBe(5);
    expect((error as Error).message).toContain(b.owner);
    expect(data.writes).toEqual([]);
    await expect(fenced.copy('db.sqlite3', undefined, 'db.sqlite3.backup.x')).rejects.toBeInstanceOf(LeaseLostError);
    await expect(fenced.delete('db.sqlite3.backup.y')).rejects.toBeInstanceOf(LeaseLostError);
    expect(data.writes).toEqual([]);
    expect(a.state).toBe('lost');
    expect(lost).toHaveLength(1);
    // B's lease is untouched by A's attempts.
    expect(parseLeaseRecord(store.objects.get(KEY) ?? Buffer.alloc(0))?.owner).toBe(b.owner);
    // And releasing a lost lease writes nothing.
    const writes = store.writes;
    await a.release();
    expect(store.writes).toBe(writes);
  });

  it('confirms the lease before each write while it holds it', async () => {
    const store = new MemoryCasStore();
    const a = track(lease(store, manualClock()));
    await a.tryAcquire();
    const data = new RecordingStore();
    const fenced = new FencedStore(data, () => a);
    const before = store.writes;
    await fenced.put('db.sqlite3', '/x', { metadata: {} });
    await fenced.copy('db.sqlite3', 'v1', 'db.sqlite3.backup.x');
    expect(data.writes).toEqual(['put db.sqlite3', 'copy db.sqlite3.backup.x']);
    expect(store.writes).toBe(before + 2);
  });

  it('passes writes through when there is no lease', async () => {
    const data = new RecordingStore();
    await new FencedStore(data, () => undefined).put('db.sqlite3', '/x', { metadata: {} });
    expect(data.writes).toEqual(['put db.sqlite3']);
  });

  it('tolerates failed renewals within validity, pauses writes after it, and resumes when a renewal succeeds', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    await a.tryAcquire();
    const data = new RecordingStore();
    const fenced = new FencedStore(data, () => a);
    store.failWrites = new StorageError('network down', { retryable: true, code: 'ECONNRESET' });

    clock.advance(TTL / 2);
    await fenced.put('db.sqlite3', '/x', { metadata: {} }); // still valid: nobody can have taken over
    expect(data.writes).toHaveLength(1);

    clock.advance(TTL);
    const error = await fenced.put('db.sqlite3', '/x', { metadata: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLapsedError);
    expect((error as LeaseLapsedError).retryable).toBe(true);
    expect(data.writes).toHaveLength(1);
    expect(a.state).toBe('lapsed');

    store.failWrites = undefined;
    await fenced.put('db.sqlite3', '/x', { metadata: {} });
    expect(data.writes).toHaveLength(2);
    expect(a.state).toBe('held');
  });

  it('does not count a conflict as a loss while the object is still its own', async () => {
    const store = new MemoryCasStore();
    const a = track(lease(store, manualClock()));
    await a.tryAcquire();
    store.failWrites = new PreconditionFailedError('409 ConditionalRequestConflict');
    await expect(a.renew()).rejects.toBeInstanceOf(LeaseLapsedError);
    expect(a.state).toBe('held');
    store.failWrites = undefined;
    await a.renew();
    expect(a.state).toBe('held');
  });

  it('recognises its own write when a write it made is answered with a failed condition (create, renew, release)', async () => {
    const store = new MemoryCasStore();
    const a = track(lease(store, manualClock()));
    const retried412 = (): PreconditionFailedError => new PreconditionFailedError('412 on the SDK retry of an applied write');
    store.failAfterWrite = retried412();
    expect(await a.tryAcquire()).toMatchObject({ acquired: true, how: 'created' });
    store.failAfterWrite = retried412();
    await a.renew();
    await a.assertHeld();
    expect(a.state).toBe('held');
    store.failAfterWrite = retried412();
    await a.release();
    expect(a.state).toBe('released');
    expect(parseLeaseRecord((await store.getBytes(KEY))?.bytes ?? Buffer.alloc(0))).toMatchObject({ owner: a.owner, released: true });
  });

  it("still loses the lease when the failed condition is another owner's record", async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    await b.tryAcquire();
    clock.advance(TTL);
    expect((await b.tryAcquire()).acquired).toBe(true);
    await expect(a.renew()).rejects.toBeInstanceOf(LeaseLostError);
    expect(a.state).toBe('lost');
  });

  it('abandons a write in flight when the lease is lost during it', async () => {
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    const b = track(lease(store, clock));
    await a.tryAcquire();
    const data = new RecordingStore();
    let started!: () => void;
    const startedP = new Promise<void>((resolve) => (started = resolve));
    data.block = (signal) => {
      started();
      return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(new AbortedError('put aborted'))));
    };
    const put = new FencedStore(data, () => a).put('db.sqlite3', '/x', { metadata: {} }).catch((e: unknown) => e);
    await startedP;
    await b.tryAcquire();
    clock.advance(TTL);
    await b.tryAcquire();
    await a.renew().catch(() => undefined); // A's renewal timer fires and finds B
    expect(await put).toBeInstanceOf(LeaseLostError);
  });

  it('acquire() waits, polling, until the holder releases; and stops waiting when aborted', async () => {
    const store = new MemoryCasStore();
    const a = track(lease(store, manualClock()));
    await a.acquire(new AbortController().signal);
    const b = track(lease(store, manualClock(), { pollMs: 5 }));
    const holders: unknown[] = [];
    const acquired = b.acquire(new AbortController().signal, (holder) => holders.push(holder?.owner));
    await vi.waitFor(() => expect(holders.length).toBeGreaterThan(1));
    expect(b.state).toBe('waiting');
    expect(b.status().holder?.owner).toBe(a.owner);
    await a.release();
    await acquired;
    expect(b.state).toBe('held');
    expect(new Set(holders)).toEqual(new Set([a.owner]));

    const c = track(lease(store, manualClock(), { pollMs: 5 }));
    const controller = new AbortController();
    const waiting = c.acquire(controller.signal).catch((e: unknown) => e);
    await vi.waitFor(() => expect(c.state).toBe('waiting'));
    controller.abort(new Error('SIGTERM'));
    expect(await waiting).toBeInstanceOf(AbortedError);
  });

  it('renews on its timer, every third of the TTL', async () => {
    vi.useFakeTimers();
    const store = new MemoryCasStore();
    const clock = manualClock();
    const a = track(lease(store, clock));
    await a.tryAcquire();
    a.startRenewing();
    const etags: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      clock.advance(TTL / 3);
      await vi.advanceTimersByTimeAsync(TTL / 3);
      etags.push((await store.getBytes(KEY))?.etag ?? '');
    }
    expect(new Set(etags).size).toBe(3);
    expect(a.state).toBe('held');
    a.stop();
    const writes = store.writes;
    await vi.advanceTimersByTimeAsync(TTL);
    expect(store.writes).toBe(writes);
  });

  it('reads the ECS task id from the metadata URI', () => {
    expect(ecsTaskFromMetadataUri('http://169.254.170.2/v4/8f03e41243824aea923aca126495f665-1225990521')).toBe(
      '8f03e41243824aea923aca126495f665-1225990521',
    );
    expect(ecsTaskFromMetadataUri(undefined)).toBeUndefined();
    expect(ecsTaskFromMetadataUri('not a url')).toBeUndefined();
  });
});

/** Records the writes that reach it; `block` can hold a put until its signal fires. */
class RecordingStore implements ReplicaStore {
  readonly location = 'recording';
  readonly writes: string[] = [];
  block: ((signal: AbortSignal | undefined) => Promise<never>) | undefined;

  private info(key: string): ObjectInfo {
    return { key, versionId: 'v', sizeBytes: 0, lastModified: new Date(), isLatest: true, metadata: {} };
  }
  head(): Promise<ObjectInfo | null> {
    return Promise.resolve(null);
  }
  get(): Promise<GetResult | null> {
    return Promise.resolve(null);
  }
  async put(key: string, _path: string, options: PutOptions): Promise<ObjectInfo> {
    if (this.block) await this.block(options.signal);
    this.writes.push(`put ${key}`);
    return this.info(key);
  }
  async putFromPrevious(key: string, path: string, options: PutOptions): Promise<PutFromPreviousResult> {
    const info = await this.put(key, path, options);
    return { info, blocks: undefined, mode: 'full', sentBytes: 0, copiedBytes: 0 };
  }
  download(): Promise<Downloaded | null> {
    return Promise.resolve(null);
  }
  copy(_source: string, _version: string | undefined, destination: string): Promise<ObjectInfo> {
    this.writes.push(`copy ${destination}`);
    return Promise.resolve(this.info(destination));
  }
  list(): Promise<ObjectInfo[]> {
    return Promise.resolve([]);
  }
  listVersions(): Promise<ObjectInfo[]> {
    return Promise.resolve([]);
  }
  delete(key: string): Promise<void> {
    this.writes.push(`delete ${key}`);
    return Promise.resolve();
  }
  close(): void {}
}

describe('Sidecar with a lease (two tasks, one DirStore)', () => {
  const sidecarFor = (replica: string, dbPath: string, host: string): Sidecar => {
    const store = new DirStore(replica);
    return new Sidecar({
      store,
      key: 'db.sqlite3',
      dbPath,
      check: 'quick',
      origin: { host, toolVersion: '0' },
      log,
      intervalMs: 3_600_000,
      lease: { mode: 'required', store, key: 'db.sqlite3.lease', ttlMs: 2_000, holder: { host, toolVersion: '0' } },
    });
  };

  /** Task A's sidecar over a 3-row database, its replica in the same temp dir. */
  const taskA = (): { replica: string; dbA: string; first: Sidecar } => {
    const dir = tempDir();
    const replica = join(dir, 'replica');
    mkdirSync(join(dir, 'a'));
    const dbA = join(dir, 'a', 'db.sqlite3');
    createDatabase(dbA, 3);
    return { replica, dbA, first: sidecarFor(replica, dbA, 'task-a') };
  };

  it('the second waits, not ready, until the first has uploaded and released; then restores every row', async () => {
    const dir = tempDir();
    const replica = join(dir, 'replica');
    mkdirSync(join(dir, 'a'));
    mkdirSync(join(dir, 'b'));
    const dbA = join(dir, 'a', 'db.sqlite3');
    const first = sidecarFor(replica, dbA, 'task-a');
    const second = sidecarFor(replica, join(dir, 'b', 'db.sqlite3'), 'task-b');
    try {
      await first.prepare(new AbortController().signal);
      first.start();
      expect(first.status().lease).toMatchObject({ state: 'held' });
      createDatabase(dbA, 10);

      const preparing = second.prepare(new AbortController().signal);
      await vi.waitFor(() => expect(second.status().lease).toMatchObject({ state: 'waiting', holder: { host: 'task-a' } }));
      expect(second.phase).toBe('waiting-for-lease');
      expect(second.ready()).toBe(false);

      addRows(dbA, 5); // the app's last writes, after the successor started
      const final = await first.finish(AbortSignal.timeout(30_000));
      expect(final.uploaded).toBeDefined();
      expect(first.status().lease).toMatchObject({ state: 'released' });

      expect((await preparing).action).toBe('restored');
      second.start();
      expect(second.ready()).toBe(true);
      expect(second.status().lease).toMatchObject({ state: 'held' });
      expect(rowCount(join(dir, 'b', 'db.sqlite3'))).toBe(15);
    } finally {
      first.close();
      second.close();
    }
  });

  it('keeps the lease when the final sync is cut short (second signal or deadline), as exec does', async () => {
    const { replica, dbA, first } = taskA();
    try {
      await first.prepare(new AbortController().signal);
      first.start();
      addRows(dbA, 2);
      const hard = new AbortController();
      hard.abort(new Error('second stop request (SIGTERM); aborting'));
      await expect(first.finish(hard.signal)).rejects.toThrow();
      // An upload cancelled just now may still land: a successor must wait out the TTL, not take over at once.
      const record = parseLeaseRecord((await new DirStore(replica).getBytes('db.sqlite3.lease'))?.bytes ?? Buffer.alloc(0));
      expect(record).toMatchObject({ host: 'task-a' });
      expect(record?.released).toBeUndefined();
    } finally {
      first.close();
    }
  });

  it('after losing the lease, uploads nothing, fails its health phase, and its final sync fails', async () => {
    const { replica, dbA, first } = taskA();
    try {
      await first.prepare(new AbortController().signal);
      first.start();
      await first.loop.syncNow();
      const versions = (await new DirStore(replica).listVersions('db.sqlite3')).length;

      // Someone breaks the lease (db-sync lease --force) and another owner takes it.
      const store = new DirStore(replica);
      await store.delete('db.sqlite3.lease');
      const other = track(
        new Lease({ store, key: 'db.sqlite3.lease', location: replica, ttlMs: 2_000, holder: { host: 'x', toolVersion: '0' }, log }),
      );
      await other.tryAcquire();

      addRows(dbA, 1);
      await expect(first.loop.syncNow()).rejects.toBeInstanceOf(LeaseLostError);
      expect(first.phase).toBe('failed');
      expect(first.status().lease).toMatchObject({ state: 'lost' });
      await expect(first.finish(AbortSignal.timeout(30_000))).rejects.toBeInstanceOf(LeaseLostError);
      expect(await new DirStore(replica).listVersions('db.sqlite3')).toHaveLength(versions);
      expect(parseLeaseRecord((await store.getBytes('db.sqlite3.lease'))?.bytes ?? Buffer.alloc(0))?.owner).toBe(other.owner);
    } finally {
      first.close();
    }
  });
});

describe('lease settings', () => {
  it('defaults to auto, 30 s, the database bucket and KEY.lease', () => {
    const config = loadConfig({ DB_S3_BUCKET: 'b' });
    expect(config).toMatchObject({ leaseMode: 'auto', leaseTtlMs: DEFAULT_LEASE_TTL_MS, leaseBucket: undefined, leaseKey: undefined });
    expect(loadConfig({ DB_S3_BUCKET: 'b' }, { lease: 'off', 'lease-ttl': '3s', 'lease-bucket': 'locks' })).toMatchObject({
      leaseMode: 'off',
      leaseTtlMs: 3_000,
      leaseBucket: 'locks',
    });
  });

  it('reports a bad mode, a too-short TTL and a lease key equal to the database key, all at once (exit 2)', () => {
    let error: unknown;
    try {
      loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_LEASE: 'sometimes', DB_SYNC_LEASE_TTL: '1s' });
    } catch (e) {
      error = e;
    }
    expect((error as Error).message).toContain('DB_SYNC_LEASE="sometimes" must be one of: auto, required, off');
    expect((error as Error).message).toContain('DB_SYNC_LEASE_TTL="1s" is too short');
    expect(() => loadConfig({ DB_S3_BUCKET: 'b', DB_S3_KEY: 'x.db', DB_SYNC_LEASE_KEY: 'x.db' })).toThrow(/would overwrite the database/);
    // In another bucket the same key is harmless.
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_KEY: 'x.db', DB_SYNC_LEASE_KEY: 'x.db', DB_SYNC_LEASE_BUCKET: 'locks' }).leaseKey).toBe(
      'x.db',
    );
  });
});
