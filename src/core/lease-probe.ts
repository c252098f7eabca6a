/**
 * Does this store really enforce conditional writes, here? Providers differ (AWS S3 since late 2024;
 * Ceph RGW only in unversioned buckets; some ignore the headers and overwrite), so db-sync asks the exact
 * bucket and key prefix the lease will use, once at start, with a throwaway object:
 *
 * 1. create it with If-None-Match — must succeed;
 * 2. create it again — must fail;
 * 3. replace it with If-Match and a wrong etag — must fail;
 * 4. replace it with If-Match and its etag — must succeed (the S3 store learns here which ETag form the
 *    endpoint matches);
 * 5. delete it.
 *
 * On a versioned bucket the deleted probe leaves a few tiny noncurrent versions, which the bucket's
 * lifecycle rule expires. The delete gets its own short deadline (a probe cut short by a stop request
 * still removes its object), and each probe first removes probe objects of this key that an earlier run
 * left (S3 unreachable at the delete, a SIGKILL): older than {@link STALE_PROBE_MS}, so a task probing at
 * the same moment keeps its own.
 */
import { randomBytes } from 'node:crypto';
import { toError, wrapError } from '../errors.js';
import type { Logger } from '../logger.js';
import { isConditionalStore, PreconditionFailedError, type ReplicaStore } from '../replica/store.js';

/** How long deleting the probe object may take, whatever happened to the probe's own signal. */
export const PROBE_DELETE_TIMEOUT_MS = 5_000;
/** Probe objects older than this are leftovers of an earlier run (a probe takes seconds). */
export const STALE_PROBE_MS = 10 * 60_000;

export interface ProbeResult {
  /** Whether every check behaved as compare-and-swap requires. */
  readonly enforced: boolean;
  /** What did not behave, in words for the log and the error message. */
  readonly problems: readonly string[];
  /** The throwaway key used. */
  readonly probeKey: string | undefined;
}

/** The key of a probe object for the lease at `leaseKey`: same prefix, unique per run. */
export function probeKeyFor(leaseKey: string): string {
  return `${probePrefix(leaseKey)}${randomBytes(6).toString('hex')}`;
}

function probePrefix(leaseKey: string): string {
  return `${leaseKey}.probe.`;
}

/**
 * Delete the probe objects of `leaseKey` older than {@link STALE_PROBE_MS}. Never throws: leftovers cost
 * pennies, and the probe must not fail for them.
 * @returns the keys deleted.
 */
export async function removeStaleProbes(
  store: ReplicaStore,
  leaseKey: string,
  options: { log: Logger; signal?: AbortSignal | undefined; now?: Date },
): Promise<string[]> {
  const { log, signal } = options;
  const before = (options.now ?? new Date()).getTime() - STALE_PROBE_MS;
  const prefix = probePrefix(leaseKey);
  const isProbe = (key: string): boolean => key.startsWith(prefix) && /^[0-9a-f]{12}$/.test(key.slice(prefix.length));
  const removed: string[] = [];
  try {
    for (const o of await store.list(prefix, { signal })) {
      if (!isProbe(o.key) || o.lastModified.getTime() >= before) continue;
      await store.delete(o.key, { signal });
      removed.push(o.key);
    }
  } catch (error) {
    log.warn({ err: toError(error).message, prefix }, 'could not remove old lease probe objects');
  }
  if (removed.length > 0) log.info({ keys: removed }, 'removed lease probe objects left by an earlier run');
  return removed;
}

/**
 * Probe conditional writes beside `leaseKey`.
 * @returns whether they are enforced, and what failed when not.
 * @throws storage errors that are not condition failures (no access, no bucket), wrapped "lease probe: …".
 */
export async function probeConditionalWrites(
  store: ReplicaStore,
  leaseKey: string,
  options: { log: Logger; signal?: AbortSignal | undefined },
): Promise<ProbeResult> {
  if (!isConditionalStore(store)) {
    return { enforced: false, problems: [`${store.location} offers no conditional writes`], probeKey: undefined };
  }
  const { signal, log } = options;
  const key = probeKeyFor(leaseKey);
  const body = (step: string): Uint8Array => Buffer.from(JSON.stringify({ probe: 'db-sync conditional writes', step }));
  /** Run a write that must fail its condition: true when it did. */
  const refused = async (write: () => Promise<unknown>): Promise<boolean> => {
    try {
      await write();
      return false;
    } catch (error) {
      if (error instanceof PreconditionFailedError) return true;
      throw error;
    }
  };
  await removeStaleProbes(store, leaseKey, { log, signal });
  const problems: string[] = [];
  let created = false;
  try {
    let etag: string;
    try {
      // Counted as created before the answer: a create applied but unanswered must be deleted too.
      created = true;
      etag = await store.putBytes(key, body('create'), { ifNoneMatch: true }, { signal });
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      return { enforced: false, problems: ['a create-only write (If-None-Match) of a new key was refused'], probeKey: key };
    }
    if (!(await refused(() => store.putBytes(key, body('create again'), { ifNoneMatch: true }, { signal })))) {
      problems.push('If-None-Match is ignored: a create-only write replaced an existing object');
      // Carry on with the etag of what is there now, to test If-Match as well.
      etag = (await store.getBytes(key, { signal }))?.etag ?? etag;
    }
    const wrong = etag === '0'.repeat(32) ? '1'.repeat(32) : '0'.repeat(32);
    if (!(await refused(() => store.putBytes(key, body('wrong etag'), { ifMatch: wrong }, { signal })))) {
      problems.push('If-Match is ignored: a write with a wrong etag replaced the object');
      etag = (await store.getBytes(key, { signal }))?.etag ?? etag;
    }
    if (await refused(() => store.putBytes(key, body('right etag'), { ifMatch: etag }, { signal }))) {
      problems.push('If-Match never matches: a write with the current etag was refused (on Ceph RGW: a versioned bucket)');
    }
    return { enforced: problems.length === 0, problems, probeKey: key };
  } catch (error) {
    throw wrapError('lease probe', error);
  } finally {
    if (created) {
      // Its own deadline, not `signal`: a probe cut short by a stop request must still remove its object.
      await store.delete(key, { signal: AbortSignal.timeout(PROBE_DELETE_TIMEOUT_MS) }).catch((error: unknown) => {
        log.warn({ err: toError(error).message, key }, 'could not delete the lease probe object');
      });
    }
  }
}
