/**
 * The capability probe against the real local S3 server (Ceph RGW): enforced in an unversioned bucket,
 * not in a versioned one (RGW ignores If-None-Match there and refuses every If-Match). And what the
 * sidecar does with each answer under DB_SYNC_LEASE=required and auto.
 */
import { utimesSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { probeConditionalWrites } from '../../src/core/lease-probe.js';
import { Sidecar } from '../../src/core/sidecar.js';
import type { LeaseMode } from '../../src/config.js';
import { AbortedError, DbSyncError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import type { ConditionalStore, SmallObject, WriteCondition } from '../../src/replica/store.js';
import { tempDir } from '../helpers/db.js';
import { createBucket } from '../helpers/s3.js';

const log = silentLogger();
const LEASE_KEY = 'app/db.sqlite3.lease';

/** A directory store whose n-th conditional write fires `controller` (SIGTERM mid-probe) and fails as aborted. */
class AbortingDirStore extends DirStore {
  private writes = 0;
  constructor(
    root: string,
    private readonly controller: AbortController,
    private readonly abortAt: number,
  ) {
    super(root);
  }
  override async putBytes(key: string, bytes: Uint8Array, condition: WriteCondition, options?: { signal?: AbortSignal }): Promise<string> {
    this.writes += 1;
    if (this.writes === this.abortAt) {
      this.controller.abort(new Error('SIGTERM'));
      throw new AbortedError('put aborted');
    }
    return super.putBytes(key, bytes, condition, options);
  }
}

describe('probeConditionalWrites', () => {
  it('finds them enforced in an unversioned bucket, and leaves no probe object behind', async () => {
    const { store } = await createBucket({ versioned: false });
    try {
      const result = await probeConditionalWrites(store, LEASE_KEY, { log });
      expect(result).toMatchObject({ enforced: true, problems: [] });
      expect(result.probeKey?.startsWith(`${LEASE_KEY}.probe.`)).toBe(true);
      expect(await store.list('app/')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('finds them not enforced in a versioned bucket, and says which header failed', async () => {
    const { store } = await createBucket({ versioned: true });
    try {
      const result = await probeConditionalWrites(store, LEASE_KEY, { log });
      expect(result.enforced).toBe(false);
      expect(result.problems.join('\n')).toMatch(/If-None-Match is ignored/);
      expect(result.problems.join('\n')).toMatch(/If-Match never matches/);
      expect(await store.list('app/')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('finds them enforced in a directory', async () => {
    const result = await probeConditionalWrites(new DirStore(tempDir()), LEASE_KEY, { log });
    expect(result).toMatchObject({ enforced: true, problems: [] });
  });

  it('deletes its probe object even when the probe itself was aborted mid-way (a stop request)', async () => {
    const dir = tempDir();
    const controller = new AbortController();
    const store = new AbortingDirStore(dir, controller, 3);
    await expect(probeConditionalWrites(store, LEASE_KEY, { log, signal: controller.signal })).rejects.toThrow();
    expect(await new DirStore(dir).list(`${LEASE_KEY}.probe.`)).toEqual([]);
  });

  it('removes probe objects an earlier run left (older than 10 minutes), and keeps a fresh one of a task probing now', async () => {
    const dir = tempDir();
    const store = new DirStore(dir);
    const old = `${LEASE_KEY}.probe.aaaaaaaaaaaa`;
    const fresh = `${LEASE_KEY}.probe.bbbbbbbbbbbb`;
    await store.putBytes(old, Buffer.from('{}'), { ifNoneMatch: true });
    await store.putBytes(fresh, Buffer.from('{}'), { ifNoneMatch: true });
    const hourAgo = new Date(Date.now() - 3_600_000);
    utimesSync(join(dir, ...old.split('/')), hourAgo, hourAgo);
    await probeConditionalWrites(store, LEASE_KEY, { log });
    expect((await store.list(`${LEASE_KEY}.probe.`)).map((o) => o.key)).toEqual([fresh]);
  });

  it('finds a store that ignores the conditions out', async () => {
    const result = await probeConditionalWrites(new IgnoringStore(), LEASE_KEY, { log });
    expect(result.enforced).toBe(false);
    expect(result.problems).toEqual([
      'If-None-Match is ignored: a create-only write replaced an existing object',
      'If-Match is ignored: a write with a wrong etag replaced the object',
    ]);
  });
});

describe('Sidecar lease modes on a versioned RGW bucket', () => {
  const sidecar = async (mode: LeaseMode): Promise<{ sidecar: Sidecar; close: () => void }> => {
    const { store } = await createBucket({ versioned: true });
    const dbPath = join(tempDir(), 'db.sqlite3');
    const s = new Sidecar({
      store,
      key: 'db.sqlite3',
      dbPath,
      check: 'quick',
      origin: { host: 'h', toolVersion: '0' },
      log,
      intervalMs: 3_600_000,
      lease: { mode, store, key: 'db.sqlite3.lease', ttlMs: 30_000, holder: { host: 'h', toolVersion: '0' } },
    });
    return {
      sidecar: s,
      close: () => {
        s.close();
        store.close();
      },
    };
  };

  it('required: refuses to start, with exit code 2 and a hint naming DB_SYNC_LEASE_BUCKET', async () => {
    const { sidecar: s, close } = await sidecar('required');
    try {
      const error = await s.prepare(new AbortController().signal).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DbSyncError);
      expect((error as DbSyncError).exitCode).toBe(2);
      expect((error as DbSyncError).message).toContain('does not enforce conditional writes');
      expect((error as DbSyncError).hint).toContain('DB_SYNC_LEASE_BUCKET');
      expect(s.ready()).toBe(false);
    } finally {
      close();
    }
  });

  it('auto: starts without a lease and reports it as unenforced', async () => {
    const { sidecar: s, close } = await sidecar('auto');
    try {
      expect((await s.prepare(new AbortController().signal)).action).toBe('first-start');
      s.start();
      expect(s.ready()).toBe(true);
      expect(s.status().lease).toMatchObject({ state: 'unenforced', key: 'db.sqlite3.lease' });
    } finally {
      close();
    }
  });
});

/** A store that accepts every conditional write, as some S3-compatible servers do. */
class IgnoringStore extends DirStore implements ConditionalStore {
  private readonly objects = new Map<string, Buffer>();
  private n = 0;

  constructor() {
    super(tempDir());
  }

  override getBytes(key: string): Promise<SmallObject | null> {
    const bytes = this.objects.get(key);
    return Promise.resolve(bytes ? { bytes, etag: `e${this.n}` } : null);
  }

  override putBytes(key: string, bytes: Uint8Array): Promise<string> {
    this.objects.set(key, Buffer.from(bytes));
    this.n += 1;
    return Promise.resolve(`e${this.n}`);
  }
}
