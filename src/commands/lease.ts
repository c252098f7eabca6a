/**
 * `db-sync lease`: who holds the single-writer lease, as a table (or `--json`); `--force` breaks it.
 *
 * Breaking deletes the lease object. A holder that is still alive finds out at its next renewal, stops
 * uploading and turns unhealthy; a waiting successor takes the lease at its next poll. Manual commands
 * (upload, download, restore…) never take the lease.
 */
import type { SidecarLeaseOptions } from '../core/sidecar.js';
import { parseLeaseRecord, type LeaseHolderInfo } from '../core/lease.js';
import { DbSyncError, ExitCode } from '../errors.js';
import { createStore } from '../replica/create-store.js';
import { isConditionalStore, type ReplicaStore } from '../replica/store.js';
import type { CommandContext } from './context.js';

/**
 * Where the lease lives for this configuration: `DB_SYNC_LEASE_KEY` (default `KEY.lease`) in
 * `DB_SYNC_LEASE_BUCKET` (default the database's bucket; a directory replica keeps it in the directory).
 */
export function leaseLocation(ctx: CommandContext): { store: ReplicaStore; key: string } {
  const { config } = ctx;
  const key = config.leaseKey ?? `${config.key}.lease`;
  if (!config.leaseBucket || config.leaseBucket === config.bucket || config.replicaDir) return { store: ctx.store, key };
  const store = createStore({ ...config, bucket: config.leaseBucket });
  ctx.shutdown.onClose('lease store', () => store.close());
  return { store, key };
}

/** The sidecar's lease settings for this command's configuration. */
export function sidecarLease(ctx: CommandContext): SidecarLeaseOptions {
  const { store, key } = leaseLocation(ctx);
  // The CLI's origin also carries the pid and ECS task (see src/cli.ts); Origin is all the type promises.
  const holder: LeaseHolderInfo = ctx.origin;
  return { mode: ctx.config.leaseMode, store, key, ttlMs: ctx.config.leaseTtlMs, holder, waitWarnMs: ctx.config.leaseWaitWarnMs };
}

export async function leaseCommand(ctx: CommandContext): Promise<number> {
  const { store, key } = leaseLocation(ctx);
  const where = `${store.location}/${key}`;
  if (!isConditionalStore(store)) {
    throw new DbSyncError('Usage', `lease: ${store.location} cannot hold a lease`, { hint: 'use an S3 bucket or a directory replica' });
  }
  const signal = ctx.shutdown.graceful;
  const current = await store.getBytes(key, { signal });
  const record = current ? parseLeaseRecord(current.bytes) : undefined;
  const now = Date.now();
  const state = !current
    ? 'none'
    : !record
      ? 'unreadable'
      : record.released
        ? 'released'
        : Date.parse(record.expiresAt) > now
          ? 'held'
          : 'expired';

  if (ctx.flags.force) {
    if (!current) {
      ctx.print(ctx.flags.json ? JSON.stringify({ location: where, state, broken: false }) : `no lease at ${where}; nothing to break`);
      return ExitCode.Ok;
    }
    await store.delete(key, { signal });
    ctx.log.warn({ lease: where, holder: record }, 'lease broken by hand (--force)');
    ctx.print(
      ctx.flags.json
        ? JSON.stringify({ location: where, state, broken: true, holder: record ?? null })
        : `lease at ${where} broken${record ? ` (was ${state}, owner ${record.owner} on ${record.host})` : ''}; ` +
            'a holder still running stops uploading at its next renewal',
    );
    return ExitCode.Ok;
  }

  if (ctx.flags.json) {
    ctx.print(JSON.stringify({ location: where, state, holder: record ?? null }));
    return ExitCode.Ok;
  }
  if (!current) {
    ctx.print(`no lease at ${where}: no db-sync run/exec holds this database`);
    return ExitCode.Ok;
  }
  if (!record) {
    ctx.print(`${where} holds something that is not a db-sync lease; a waiting db-sync takes it over (or break it: db-sync lease --force)`);
    return ExitCode.Ok;
  }
  const rows: Array<[string, string]> = [
    ['LEASE', where],
    ['STATE', state === 'expired' ? 'expired by this clock (a successor takes over once it has seen no renewal for the TTL)' : state],
    ['OWNER', record.owner],
    ['HOST', record.host],
    ['TASK', record.task ?? '-'],
    ['PID', record.pid === undefined ? '-' : String(record.pid)],
    ['ACQUIRED', record.acquiredAt],
    ['RENEWED', record.renewedAt],
    ['EXPIRES', record.expiresAt],
    ['TTL', `${record.ttlMs / 1000}s`],
    ['VERSION', record.toolVersion],
  ];
  for (const [name, value] of rows) ctx.print(`${name.padEnd(9)} ${value}`);
  return ExitCode.Ok;
}
